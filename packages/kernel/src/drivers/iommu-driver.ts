import {
  IOMMU_CONTEXT_DID_SHIFT,
  IOMMU_ENTRY_SIZE,
  IOMMU_IOVA_BITS,
  IOMMU_PTE_PAGE_SIZE,
  IOMMU_PTE_READ,
  IOMMU_PTE_WRITE,
  IOMMU_PTES_PER_TABLE,
  IOMMU_PT_LEVELS,
  KernelError,
  PAGE_SIZE,
  formatBdf,
  hex,
  type Bdf,
  type IommuFault,
  type IommuRegisters,
  type PhysicalMemory,
} from '@liveupdate/machine';
import type { KernelLog } from '../kernel-log.js';
import type { ServiceKey } from '../kernel-module.js';
import type { KexecHandover } from '../kho/kexec-handover.js';
import type { Folio, PageAllocator } from '../page-allocator.js';
import {
  IOMMU_LU_SUBTREE,
  IommuHandoverError,
  decodeIommuHandover,
  encodeIommuHandover,
  type IommuHandoverState,
} from './iommu-handover.js';

/** Size of a large IOMMU mapping (a leaf at level 2). */
export const IOMMU_HUGE_PAGE_SIZE = 2 * 1024 * 1024;
/** Largest domain id; id 0 is reserved, as on VT-d. */
export const IOMMU_MAX_DOMAIN_ID = 0xffff;

/** Permissions of a mapping; at least one must be set. */
export interface IommuProt {
  readonly read?: boolean;
  readonly write?: boolean;
}

/**
 * An IOMMU domain (`struct iommu_domain`): an IOVA space with its own 4-level page table in RAM
 * and a domain id. Devices attached to it translate through its table.
 */
export interface IommuDomain {
  readonly id: number;
  /** Physical address of the top-level page table. */
  readonly pageTableRoot: number;
}

interface DomainState extends IommuDomain {
  /** Every page-table frame of the domain, the root included. */
  readonly tables: Folio[];
  readonly devices: Set<Bdf>;
  /** KHO-preserved for the next kernel: its tables are immutable. */
  preserved: boolean;
  /** Adopted from the previous kernel: its tables are immutable and it cannot be preserved again. */
  readonly restored: boolean;
}

const LEVEL_SHIFT = (level: number): number => 12 + 9 * (level - 1);

/**
 * The kernel's IOMMU driver (the `intel-iommu` of this machine). It owns the root table and the
 * context tables, allocates page-table frames from the page allocator, and hands out domains.
 * Modules get it from `ctx.services.get(IOMMU_SERVICE)`; iommufd builds its IOAS and HWPT objects
 * on it.
 *
 * Every change that can make a translation narrower (unmap, detach, domain free) is followed by a
 * global IOTLB invalidation before the method returns: once it returns, no device reaches the old
 * pages through the old translation.
 *
 * The tables' formats are in `docs/iommu-hardware.md`.
 */
export class IommuDriver {
  readonly #memory: PhysicalMemory;
  readonly #pages: PageAllocator;
  readonly #registers: IommuRegisters;
  readonly #log: KernelLog;
  readonly #kho: KexecHandover | undefined;
  readonly #root: Folio;
  readonly #contextTables = new Map<number, Folio>();
  readonly #domains = new Map<number, DomainState>();
  readonly #attached = new Map<Bdf, number>();
  /** Devices preserved for the next kernel, with the id of their domain. */
  readonly #preservedDevices = new Map<Bdf, number>();
  /** Devices the previous kernel preserved, with the id of their restored domain. */
  readonly #restoredDevices = new Map<Bdf, number>();
  /** The handover blob currently published in KHO, if anything is preserved. */
  #handover: { phys: number } | undefined;

  /**
   * `init_dmars`. On a cold boot (or without incoming IOMMU state): translation left on by a
   * previous kernel is turned off, a fresh root table is installed and translation is enabled: a
   * device no domain claims has no context entry, so its DMA faults.
   *
   * When `kho` holds an incoming {@link IOMMU_LU_SUBTREE} subtree, the previous kernel preserved
   * devices that may still be doing DMA: translation stays on, the root table, context tables and
   * the preserved domains' page tables are restored from KHO (so the allocator never hands them
   * out), their domain ids are reserved, context entries of devices that were not preserved are
   * cleared, and each preserved device gets its restored domain ({@link restoredDomainOf}).
   * Malformed state throws {@link IommuHandoverError}: the kernel panics, as DMA may already have
   * written through tables it cannot trust.
   *
   * Without `kho`, nothing can be preserved (the preserve methods fail with `EINVAL`).
   */
  constructor(
    memory: PhysicalMemory,
    pages: PageAllocator,
    registers: IommuRegisters,
    log: KernelLog,
    kho?: KexecHandover,
  ) {
    this.#memory = memory;
    this.#pages = pages;
    this.#registers = registers;
    this.#log = log;
    this.#kho = kho;
    const incoming = this.#incomingState();
    if (incoming && incoming.devices.length > 0) {
      this.#root = this.#adoptHardware(incoming);
    } else {
      // At kexec translation stays on only for preserved devices: on a KHO boot it is the
      // previous kernel's word that devices still DMA, whatever the handover says.
      if (kho?.isKhoBoot && registers.translationEnabled) {
        throw new IommuHandoverError(
          `translation is on with root table ${hex(registers.rootTable)}, so the previous kernel kept devices translating, but ${incoming ? 'the handover lists no device' : `there is no ${IOMMU_LU_SUBTREE} subtree`}: the handover is damaged`,
        );
      }
      if (registers.translationEnabled) {
        log.warn('DMAR: translation was enabled at boot; disabling it');
        registers.setTranslationEnabled(false);
      }
      this.#root = pages.allocPages(0, { zero: true });
      registers.setRootTable(this.#root.pfn * PAGE_SIZE);
      registers.setTranslationEnabled(true);
      log.info(`DMAR: root table at ${hex(this.#root.pfn * PAGE_SIZE)}, translation enabled`);
    }
    if (incoming) this.#restoreDomains(incoming);
  }

  get translationEnabled(): boolean {
    return this.#registers.translationEnabled;
  }

  /** Domains in use. */
  get domains(): readonly IommuDomain[] {
    return [...this.#domains.values()].map(({ id, pageTableRoot }) => ({ id, pageTableRoot }));
  }

  /** `iommu_domain_alloc`: a domain with an empty page table and the lowest free id. `ENOSPC` if none. */
  allocDomain(): IommuDomain {
    let id = 1;
    while (this.#domains.has(id)) id++;
    if (id > IOMMU_MAX_DOMAIN_ID) throw new KernelError('ENOSPC', 'no free IOMMU domain id');
    const root = this.#pages.allocPages(0, { zero: true });
    const state: DomainState = {
      id,
      pageTableRoot: root.pfn * PAGE_SIZE,
      tables: [root],
      devices: new Set(),
      preserved: false,
      restored: false,
    };
    this.#domains.set(id, state);
    return { id, pageTableRoot: state.pageTableRoot };
  }

  /**
   * `iommu_domain_free`: frees the page-table frames (a restored domain's too: they go back to
   * the allocator). `EBUSY` while devices are attached or while the domain is preserved.
   */
  freeDomain(domain: IommuDomain): void {
    const state = this.#state(domain);
    if (state.preserved) {
      throw new KernelError('EBUSY', `IOMMU domain ${state.id} is preserved for live update`);
    }
    if (state.devices.size > 0) {
      throw new KernelError('EBUSY', `IOMMU domain ${state.id} has attached devices`);
    }
    this.#domains.delete(state.id);
    this.#registers.invalidateAll();
    for (const table of state.tables) this.#pages.freePages(table);
    for (const [bdf, id] of this.#restoredDevices) {
      if (id === state.id) this.#restoredDevices.delete(bdf);
    }
  }

  /**
   * `iommu_attach_device`: point the context entry of `bdf` at the domain. `EBUSY` if the device
   * is attached to another domain (detach it first).
   */
  attachDevice(domain: IommuDomain, bdf: Bdf): void {
    const state = this.#state(domain);
    const current = this.#attached.get(bdf);
    if (current === state.id) return;
    if (current !== undefined) {
      throw new KernelError('EBUSY', `${formatBdf(bdf)} is attached to IOMMU domain ${current}`);
    }
    this.#writeContextEntry(this.#contextEntry(bdf), state);
    this.#registers.invalidateAll();
    state.devices.add(bdf);
    this.#attached.set(bdf, state.id);
    this.#log.info(`DMAR: ${formatBdf(bdf)} attached to domain ${state.id}`);
  }

  /**
   * Hitless domain replacement (`iommu_group_replace_domain`): move `bdf` from the domain it is
   * attached to onto `domain` by rewriting its context entry in place, then invalidate. The
   * device never sees a missing context entry, so DMA that both domains map keeps flowing. A
   * device attached nowhere is simply attached. This is how a device leaves its restored domain
   * after a live update. `EBUSY` while the device is preserved ({@link preserveDevice}).
   */
  replaceDevice(domain: IommuDomain, bdf: Bdf): void {
    const state = this.#state(domain);
    const current = this.#attached.get(bdf);
    if (current === state.id) return;
    this.#checkNotPreserved(bdf);
    if (current === undefined) {
      this.attachDevice(domain, bdf);
      return;
    }
    this.#writeContextEntry(this.#contextEntry(bdf), state);
    this.#registers.invalidateAll();
    this.#domains.get(current)?.devices.delete(bdf);
    state.devices.add(bdf);
    this.#attached.set(bdf, state.id);
    this.#log.info(`DMAR: ${formatBdf(bdf)} moved from domain ${current} to ${state.id}`);
  }

  /**
   * `iommu_detach_device`: clear the context entry; the device's DMA faults from now on. `EBUSY`
   * while the device is preserved ({@link preserveDevice}).
   */
  detachDevice(bdf: Bdf): void {
    const id = this.#attached.get(bdf);
    if (id === undefined) return;
    this.#checkNotPreserved(bdf);
    this.#clearContextEntry(bdf);
    this.#domains.get(id)?.devices.delete(bdf);
    this.#attached.delete(bdf);
  }

  /** The domain `bdf` is attached to, if any. */
  domainOf(bdf: Bdf): IommuDomain | undefined {
    const id = this.#attached.get(bdf);
    const state = id === undefined ? undefined : this.#domains.get(id);
    return state ? { id: state.id, pageTableRoot: state.pageTableRoot } : undefined;
  }

  /**
   * `iommu_map`: map `[iova, iova + length)` to `[phys, phys + length)`. All three must be
   * page-aligned; 2 MiB leaves are used where IOVA, address and remaining length allow. `EEXIST`
   * if any page is already mapped (nothing is mapped then), `EINVAL` for bad arguments, `EBUSY`
   * on a preserved or restored domain (its tables are immutable).
   */
  map(domain: IommuDomain, iova: number, phys: number, length: number, prot: IommuProt): void {
    const state = this.#mutableState(domain);
    checkRange(iova, length);
    if (
      !Number.isSafeInteger(phys) ||
      phys % PAGE_SIZE !== 0 ||
      !this.#memory.contains(phys, length)
    ) {
      throw new KernelError(
        'EINVAL',
        `iommu map: ${hex(phys)}+${hex(length)} is not page-aligned RAM`,
      );
    }
    const flags = (prot.read ? IOMMU_PTE_READ : 0) | (prot.write ? IOMMU_PTE_WRITE : 0);
    if (flags === 0) throw new KernelError('EINVAL', 'iommu map: no permission given');
    const mapped = this.#firstMapped(state, iova, length);
    if (mapped !== null) {
      throw new KernelError('EEXIST', `iommu map: IOVA ${hex(mapped)} is already mapped`);
    }
    let off = 0;
    while (off < length) {
      const huge =
        (iova + off) % IOMMU_HUGE_PAGE_SIZE === 0 &&
        (phys + off) % IOMMU_HUGE_PAGE_SIZE === 0 &&
        length - off >= IOMMU_HUGE_PAGE_SIZE &&
        this.#emptyForHuge(state, iova + off);
      const level = huge ? 2 : 1;
      const pte = this.#pte(state, iova + off, level, true)!;
      writeEntry(this.#memory, pte, phys + off, flags | (huge ? IOMMU_PTE_PAGE_SIZE : 0));
      off += huge ? IOMMU_HUGE_PAGE_SIZE : PAGE_SIZE;
    }
  }

  /**
   * `iommu_unmap`: remove every mapping in `[iova, iova + length)` and invalidate. A 2 MiB leaf
   * must be unmapped whole (`EINVAL` otherwise). Returns the number of bytes unmapped. `EBUSY` on
   * a preserved or restored domain.
   */
  unmap(domain: IommuDomain, iova: number, length: number): number {
    const state = this.#mutableState(domain);
    checkRange(iova, length);
    const leaves: { pte: number; size: number }[] = [];
    let off = 0;
    while (off < length) {
      const found = this.#lookup(state, iova + off);
      if (!found) {
        off += PAGE_SIZE;
        continue;
      }
      if (found.level === 2) {
        if ((iova + off) % IOMMU_HUGE_PAGE_SIZE !== 0 || length - off < IOMMU_HUGE_PAGE_SIZE) {
          throw new KernelError(
            'EINVAL',
            `iommu unmap: would split the 2 MiB mapping at ${hex(iova + off)}`,
          );
        }
        leaves.push({ pte: found.pte, size: IOMMU_HUGE_PAGE_SIZE });
        off += IOMMU_HUGE_PAGE_SIZE;
      } else {
        leaves.push({ pte: found.pte, size: PAGE_SIZE });
        off += PAGE_SIZE;
      }
    }
    for (const leaf of leaves) writeEntry(this.#memory, leaf.pte, 0, 0);
    if (leaves.length > 0) this.#registers.invalidateAll();
    return leaves.reduce((sum, leaf) => sum + leaf.size, 0);
  }

  /** `iommu_iova_to_phys`: the physical address `iova` maps to, or `null`. */
  iovaToPhys(domain: IommuDomain, iova: number): number | null {
    const found = this.#lookup(this.#state(domain), iova);
    if (!found) return null;
    return found.phys + (iova % 2 ** LEVEL_SHIFT(found.level));
  }

  /** The hardware's fault log, oldest first. */
  faults(): IommuFault[] {
    return this.#registers.faults();
  }

  /**
   * At kexec, after the PCI bus has reset the devices it does not keep. With no preserved
   * device, translation is turned off, as Linux does without KHO. Otherwise translation and the
   * root table stay, and the context entries of every device that is not preserved are cleared
   * (then invalidated), so only preserved devices can still DMA, through their preserved domains.
   */
  shutdown(): void {
    if (this.#preservedDevices.size === 0) {
      this.#registers.setTranslationEnabled(false);
      this.#log.info('DMAR: translation disabled');
      return;
    }
    for (const bdf of this.#attached.keys()) {
      if (!this.#preservedDevices.has(bdf)) this.#memory.writeU32(this.#contextEntryAt(bdf)!, 0);
    }
    this.#registers.invalidateAll();
    this.#log.info(
      `DMAR: live update: translation kept for ${this.#preservedDevices.size} preserved devices`,
    );
  }

  /**
   * `iommu_preserve_domain`: KHO-preserve every page-table frame of `domain` (not the pages it
   * maps: their owner preserves those) and publish it for the next kernel. From now on `map`,
   * `unmap` and `freeDomain` on it fail with `EBUSY`, so the preserved set stays exact.
   * `EBUSY` if it is already preserved; `EINVAL` for a restored domain (move the device to a
   * fresh domain first) or when KHO is off; `ENOENT` for an unknown domain.
   */
  preserveDomain(domain: IommuDomain): void {
    const state = this.#state(domain);
    if (state.restored) {
      throw new KernelError(
        'EINVAL',
        `IOMMU domain ${state.id} was restored from the previous kernel and cannot be preserved again`,
      );
    }
    if (state.preserved) {
      throw new KernelError('EBUSY', `IOMMU domain ${state.id} is already preserved`);
    }
    const kho = this.#requireKho();
    this.#preserveAll(kho, state.tables);
    state.preserved = true;
    try {
      this.#publish();
    } catch (error) {
      state.preserved = false;
      for (const table of state.tables) kho.unpreserveFolio(table);
      throw error;
    }
    this.#log.info(`DMAR: domain ${state.id} preserved (${state.tables.length} table frames)`);
  }

  /**
   * `iommu_unpreserve_domain`: undo {@link preserveDomain}. `ENOENT` if the domain is not
   * preserved, `EBUSY` while a preserved device points at it.
   */
  unpreserveDomain(domain: IommuDomain): void {
    const state = this.#state(domain);
    if (!state.preserved) {
      throw new KernelError('ENOENT', `IOMMU domain ${state.id} is not preserved`);
    }
    for (const [bdf, id] of this.#preservedDevices) {
      if (id === state.id) {
        throw new KernelError(
          'EBUSY',
          `${formatBdf(bdf)} is preserved on IOMMU domain ${state.id}`,
        );
      }
    }
    const kho = this.#requireKho();
    state.preserved = false;
    this.#publish();
    for (const table of state.tables) kho.unpreserveFolio(table);
  }

  /**
   * `iommu_preserve_device`: keep `bdf` translated through `domain` across the kexec. The first
   * preserved device also preserves the root table and every context table (the hardware unit,
   * refcounted across devices); a context table allocated later while devices are preserved is
   * preserved too. `EINVAL` unless `domain` is preserved and `bdf` attached to it; `EBUSY` if
   * `bdf` is already preserved. While preserved, the device cannot be detached or replaced.
   */
  preserveDevice(bdf: Bdf, domain: IommuDomain): void {
    const state = this.#state(domain);
    if (!state.preserved) {
      throw new KernelError('EINVAL', `IOMMU domain ${state.id} is not preserved`);
    }
    if (this.#attached.get(bdf) !== state.id) {
      throw new KernelError(
        'EINVAL',
        `${formatBdf(bdf)} is not attached to IOMMU domain ${state.id}`,
      );
    }
    if (this.#preservedDevices.has(bdf)) {
      throw new KernelError('EBUSY', `${formatBdf(bdf)} is already preserved`);
    }
    const kho = this.#requireKho();
    const unit = this.#preservedDevices.size === 0 ? this.#hardwareTables() : [];
    this.#preserveAll(kho, unit);
    this.#preservedDevices.set(bdf, state.id);
    try {
      this.#publish();
    } catch (error) {
      this.#preservedDevices.delete(bdf);
      for (const table of unit) kho.unpreserveFolio(table);
      throw error;
    }
    this.#log.info(`DMAR: ${formatBdf(bdf)} preserved on domain ${state.id}`);
  }

  /**
   * `iommu_unpreserve_device`: undo {@link preserveDevice}; the last one also unpreserves the
   * root and context tables. `ENOENT` if `bdf` is not preserved.
   */
  unpreserveDevice(bdf: Bdf): void {
    if (!this.#preservedDevices.has(bdf)) {
      throw new KernelError('ENOENT', `${formatBdf(bdf)} is not preserved`);
    }
    const kho = this.#requireKho();
    this.#preservedDevices.delete(bdf);
    this.#publish();
    if (this.#preservedDevices.size === 0) {
      for (const table of this.#hardwareTables()) kho.unpreserveFolio(table);
    }
  }

  /**
   * The domain the previous kernel kept `bdf` translated through, restored at boot, while that
   * domain lives (until {@link freeDomain}). Such a domain can be attached, replaced, detached
   * and freed like any other, but `map`/`unmap` on it fail with `EBUSY` and it cannot be
   * preserved again; its id is never handed out while it lives.
   */
  restoredDomainOf(bdf: Bdf): IommuDomain | undefined {
    const id = this.#restoredDevices.get(bdf);
    const state = id === undefined ? undefined : this.#domains.get(id);
    return state ? { id: state.id, pageTableRoot: state.pageTableRoot } : undefined;
  }

  /**
   * The domains restored from the previous kernel that still live (not yet freed), in id order,
   * whether or not a device still translates through them. The owner of the live-update state
   * (iommufd's IOMMU FLB) walks them to free those nobody reclaimed.
   */
  restoredDomains(): IommuDomain[] {
    return [...this.#domains.values()]
      .filter((state) => state.restored)
      .sort((a, b) => a.id - b.id)
      .map(({ id, pageTableRoot }) => ({ id, pageTableRoot }));
  }

  /**
   * `iommu_domain_has_attachments()`: whether any device is attached to `domain` (a restored
   * domain counts the preserved devices the new kernel adopted on it). `ENOENT` for an unknown
   * domain.
   */
  hasAttachments(domain: IommuDomain): boolean {
    return this.#state(domain).devices.size > 0;
  }

  /** The devices the previous kernel preserved that are still on their restored domain. */
  get restoredDevices(): Bdf[] {
    return [...this.#restoredDevices.keys()];
  }

  /** Whether `bdf` is preserved for the next kernel ({@link preserveDevice}). */
  isDevicePreserved(bdf: Bdf): boolean {
    return this.#preservedDevices.has(bdf);
  }

  #requireKho(): KexecHandover {
    if (!this.#kho) throw new KernelError('EINVAL', 'DMAR: live update needs KHO');
    return this.#kho;
  }

  /** Preserve `folios` all or none. */
  #preserveAll(kho: KexecHandover, folios: readonly Folio[]): void {
    const done: Folio[] = [];
    try {
      for (const folio of folios) {
        kho.preserveFolio(folio);
        done.push(folio);
      }
    } catch (error) {
      for (const folio of done) kho.unpreserveFolio(folio);
      throw error;
    }
  }

  /** The root table and every context table. */
  #hardwareTables(): Folio[] {
    return [this.#root, ...this.#contextTables.values()];
  }

  /**
   * Rewrite the handover blob from the current preserved state, kept current at every preserve
   * and unpreserve (so a reboot notifier needs no IOMMU step): the new blob is allocated first,
   * so a failure leaves the old one published.
   */
  #publish(): void {
    const kho = this.#requireKho();
    const domains = [...this.#domains.values()].filter((d) => d.preserved);
    let next: { phys: number; size: number } | undefined;
    if (domains.length > 0) {
      const bytes = encodeIommuHandover({
        rootTable: this.#preservedDevices.size === 0 ? 0 : this.#root.pfn * PAGE_SIZE,
        contextTables:
          this.#preservedDevices.size === 0
            ? []
            : [...this.#contextTables].map(([bus, t]) => ({ bus, phys: t.pfn * PAGE_SIZE })),
        domains: domains.map((d) => ({
          id: d.id,
          pageTableRoot: d.pageTableRoot,
          tables: d.tables.map((t) => t.pfn * PAGE_SIZE),
        })),
        devices: [...this.#preservedDevices].map(([bdf, domainId]) => ({ bdf, domainId })),
      });
      next = { phys: kho.allocPreserve(bytes.length), size: bytes.length };
      this.#memory.write(next.phys, bytes);
    }
    if (this.#handover) {
      kho.removeSubtree(this.#handover.phys);
      kho.unpreserveFree(this.#handover.phys);
      this.#handover = undefined;
    }
    if (next) {
      kho.addSubtree(IOMMU_LU_SUBTREE, next.phys, next.size);
      this.#handover = { phys: next.phys };
    }
  }

  /** The incoming state, read and freed, or `undefined` when there is none. */
  #incomingState(): IommuHandoverState | undefined {
    const kho = this.#kho;
    if (!kho?.isKhoBoot) return undefined;
    let blob;
    try {
      blob = kho.retrieveSubtree(IOMMU_LU_SUBTREE);
    } catch (error) {
      if (KernelError.isInstance(error) && error.code === 'ENOENT') return undefined;
      throw new IommuHandoverError((error as Error).message);
    }
    const state = decodeIommuHandover(this.#memory.read(blob.phys, blob.size));
    try {
      kho.restoreFree(blob.phys);
    } catch (error) {
      throw new IommuHandoverError(`blob ${hex(blob.phys)}: ${(error as Error).message}`);
    }
    return state;
  }

  /**
   * Adopt the previous kernel's translation for its preserved devices: check that the hardware
   * and the tables in RAM agree with the handover, restore the root and context tables from KHO,
   * then drop the context entries of devices that were not preserved. Returns the root table.
   */
  #adoptHardware(state: IommuHandoverState): Folio {
    const registers = this.#registers;
    if (!registers.translationEnabled || registers.rootTable !== state.rootTable) {
      throw new IommuHandoverError(
        `root table ${hex(state.rootTable)} is not the one the IOMMU translates with (${registers.translationEnabled ? hex(registers.rootTable) : 'translation off'})`,
      );
    }
    const memory = this.#memory;
    const contextByBus = new Map(state.contextTables.map((t) => [t.bus, t.phys]));
    for (let bus = 0; bus < 256; bus++) {
      const at = state.rootTable + bus * IOMMU_ENTRY_SIZE;
      const present = (memory.readU32(at) & 1) === 1;
      const table = contextByBus.get(bus);
      if (present !== (table !== undefined) || (present && entryAddress(memory, at) !== table)) {
        throw new IommuHandoverError(
          `root entry of bus ${bus} does not match the handover's context tables`,
        );
      }
    }
    const domains = new Map(state.domains.map((d) => [d.id, d]));
    for (const device of state.devices) {
      const at = contextByBus.get(device.bdf >> 8)! + (device.bdf & 0xff) * IOMMU_ENTRY_SIZE;
      const domain = domains.get(device.domainId)!;
      const did = (memory.readU32(at + 8) >>> IOMMU_CONTEXT_DID_SHIFT) & 0xffff;
      if (
        (memory.readU32(at) & 1) !== 1 ||
        entryAddress(memory, at) !== domain.pageTableRoot ||
        did !== domain.id
      ) {
        throw new IommuHandoverError(
          `context entry of ${formatBdf(device.bdf)} does not point at domain ${domain.id}`,
        );
      }
    }
    const root = this.#restoreFrame(state.rootTable, 'root table');
    for (const { bus, phys } of state.contextTables) {
      this.#contextTables.set(bus, this.#restoreFrame(phys, 'context table'));
    }
    const preserved = new Set(state.devices.map((d) => d.bdf));
    let cleared = 0;
    for (const [bus, table] of this.#contextTables) {
      for (let devfn = 0; devfn < 256; devfn++) {
        const at = table.pfn * PAGE_SIZE + devfn * IOMMU_ENTRY_SIZE;
        if ((memory.readU32(at) & 1) === 1 && !preserved.has((bus << 8) | devfn)) {
          memory.writeU32(at, 0);
          cleared++;
        }
      }
    }
    registers.invalidateAll();
    this.#log.info(
      `DMAR: live update: root table at ${hex(state.rootTable)} kept, translation left on, ${cleared} stale context entries cleared`,
    );
    return root;
  }

  /**
   * Restore the preserved domains' table frames from KHO and take their ids; each preserved
   * device is attached to its restored domain.
   */
  #restoreDomains(state: IommuHandoverState): void {
    for (const domain of state.domains) {
      this.#domains.set(domain.id, {
        id: domain.id,
        pageTableRoot: domain.pageTableRoot,
        tables: domain.tables.map((phys) => this.#restoreFrame(phys, `domain ${domain.id} table`)),
        devices: new Set(),
        preserved: false,
        restored: true,
      });
    }
    // Read only now that every listed frame is known to be preserved RAM.
    for (const domain of state.domains) this.#checkDomainTables(domain);
    for (const { bdf, domainId } of state.devices) {
      this.#domains.get(domainId)!.devices.add(bdf);
      this.#attached.set(bdf, domainId);
      this.#restoredDevices.set(bdf, domainId);
    }
    this.#log.info(
      `DMAR: live update: restored ${state.domains.length} domains for ${state.devices.length} devices`,
    );
  }

  /**
   * The frames a domain lists are exactly the tables its root reaches: a table entry pointing
   * outside the list, or a listed frame no entry reaches, means the blob or the tables are not
   * what the previous kernel preserved (its tables only ever grow, so both sets are equal).
   */
  #checkDomainTables(domain: IommuHandoverState['domains'][number]): void {
    const listed = new Set(domain.tables);
    const reached = new Set<number>([domain.pageTableRoot]);
    let level = [domain.pageTableRoot];
    for (let l = IOMMU_PT_LEVELS; l > 1 && level.length > 0; l--) {
      const next: number[] = [];
      for (const table of level) {
        for (let i = 0; i < IOMMU_PTES_PER_TABLE; i++) {
          const pte = table + i * 8;
          const lo = this.#memory.readU32(pte);
          if ((lo & (IOMMU_PTE_READ | IOMMU_PTE_WRITE)) === 0) continue;
          if (l === 2 && (lo & IOMMU_PTE_PAGE_SIZE) !== 0) continue;
          const child = entryAddress(this.#memory, pte);
          if (!listed.has(child) || reached.has(child)) {
            throw new IommuHandoverError(
              `domain ${domain.id}: level-${l} table ${hex(table)} entry ${i} points at ${hex(child)}, which is ${reached.has(child) ? 'reached twice' : `not one of its ${listed.size} listed table frames`}`,
            );
          }
          reached.add(child);
          next.push(child);
        }
      }
      level = next;
    }
    const unreached = domain.tables.find((phys) => !reached.has(phys));
    if (unreached !== undefined) {
      throw new IommuHandoverError(
        `domain ${domain.id}: listed table frame ${hex(unreached)} is not reached from its root ${hex(domain.pageTableRoot)}`,
      );
    }
  }

  #restoreFrame(phys: number, what: string): Folio {
    try {
      return this.#kho!.restoreFolio(phys, 0);
    } catch (error) {
      throw new IommuHandoverError(`${what} ${hex(phys)}: ${(error as Error).message}`);
    }
  }

  #preserveContextTable(bus: number, table: Folio): void {
    const kho = this.#kho!;
    try {
      kho.preserveFolio(table);
    } catch (error) {
      this.#pages.freePages(table);
      throw error;
    }
    this.#contextTables.set(bus, table);
    try {
      this.#publish();
    } catch (error) {
      this.#contextTables.delete(bus);
      kho.unpreserveFolio(table);
      this.#pages.freePages(table);
      throw error;
    }
  }

  #checkNotPreserved(bdf: Bdf): void {
    if (this.#preservedDevices.has(bdf)) {
      throw new KernelError('EBUSY', `${formatBdf(bdf)} is preserved for live update`);
    }
  }

  /** The domain, if its tables may change. */
  #mutableState(domain: IommuDomain): DomainState {
    const state = this.#state(domain);
    if (state.preserved || state.restored) {
      throw new KernelError(
        'EBUSY',
        `IOMMU domain ${state.id} is ${state.preserved ? 'preserved for live update' : 'restored from the previous kernel'}; its mappings are immutable`,
      );
    }
    return state;
  }

  /** Clear the context entry of `bdf` (present bit first), invalidate, then zero the rest. */
  #clearContextEntry(bdf: Bdf): void {
    const entry = this.#contextEntryAt(bdf);
    if (entry === null) return;
    this.#memory.writeU32(entry, 0);
    this.#registers.invalidateAll();
    this.#memory.fill(entry, IOMMU_ENTRY_SIZE, 0);
  }

  /** Address of the context entry of `bdf`, or `null` when its bus has no context table. */
  #contextEntryAt(bdf: Bdf): number | null {
    const table = this.#contextTables.get(bdf >> 8);
    return table ? table.pfn * PAGE_SIZE + (bdf & 0xff) * IOMMU_ENTRY_SIZE : null;
  }

  #state(domain: IommuDomain): DomainState {
    const state = this.#domains.get(domain.id);
    if (!state || state.pageTableRoot !== domain.pageTableRoot) {
      throw new KernelError('ENOENT', `no IOMMU domain ${domain.id}`);
    }
    return state;
  }

  /**
   * Point the context entry at `entry` to `state`: domain id, then the table root's high half,
   * then its low half with the present bit, so the hardware reads either the old or the new
   * translation (its IOTLB is invalidated by the caller).
   */
  #writeContextEntry(entry: number, state: DomainState): void {
    this.#memory.writeU32(entry + 8, state.id << IOMMU_CONTEXT_DID_SHIFT);
    this.#memory.writeU32(entry + 4, Math.floor(state.pageTableRoot / 2 ** 32));
    this.#memory.writeU32(entry, (state.pageTableRoot % 2 ** 32) | 1);
  }

  /** Address of the context entry of `bdf`, allocating the bus's context table if needed. */
  #contextEntry(bdf: Bdf): number {
    const bus = bdf >> 8;
    let table = this.#contextTables.get(bus);
    if (!table) {
      table = this.#pages.allocPages(0, { zero: true });
      // A new bus while the hardware unit is preserved: its context table crosses too.
      if (this.#preservedDevices.size > 0) this.#preserveContextTable(bus, table);
      this.#contextTables.set(bus, table);
      writeEntry(
        this.#memory,
        this.#root.pfn * PAGE_SIZE + bus * IOMMU_ENTRY_SIZE,
        table.pfn * PAGE_SIZE,
        1,
      );
    }
    return table.pfn * PAGE_SIZE + (bdf & 0xff) * IOMMU_ENTRY_SIZE;
  }

  /** Address of the entry for `iova` at `level`, creating tables above it when `create`. */
  #pte(state: DomainState, iova: number, level: number, create: boolean): number | null {
    let table = state.pageTableRoot;
    for (let l = IOMMU_PT_LEVELS; ; l--) {
      const pte = table + (Math.floor(iova / 2 ** LEVEL_SHIFT(l)) % IOMMU_PTES_PER_TABLE) * 8;
      if (l === level) return pte;
      const lo = this.#memory.readU32(pte);
      if ((lo & (IOMMU_PTE_READ | IOMMU_PTE_WRITE)) === 0) {
        if (!create) return null;
        const frame = this.#pages.allocPages(0, { zero: true });
        state.tables.push(frame);
        writeEntry(this.#memory, pte, frame.pfn * PAGE_SIZE, IOMMU_PTE_READ | IOMMU_PTE_WRITE);
      } else if (l === 2 && (lo & IOMMU_PTE_PAGE_SIZE) !== 0) {
        return null;
      }
      table = entryAddress(this.#memory, pte);
    }
  }

  /**
   * The first IOVA of `[iova, iova + length)` that is mapped, or `null`. Walks the tables once
   * and skips every range whose table entry is absent, so checking a large range of a sparse
   * domain costs its tables, not one walk per page.
   */
  #firstMapped(state: DomainState, iova: number, length: number): number | null {
    const end = iova + length;
    let at = iova;
    while (at < end) {
      let table = state.pageTableRoot;
      for (let level = IOMMU_PT_LEVELS; ; level--) {
        const span = 2 ** LEVEL_SHIFT(level);
        const pte = table + (Math.floor(at / span) % IOMMU_PTES_PER_TABLE) * 8;
        const lo = this.#memory.readU32(pte);
        if ((lo & (IOMMU_PTE_READ | IOMMU_PTE_WRITE)) === 0) {
          at = (Math.floor(at / span) + 1) * span;
          break;
        }
        if (level === 1 || (level === 2 && (lo & IOMMU_PTE_PAGE_SIZE) !== 0)) return at;
        table = entryAddress(this.#memory, pte);
      }
    }
    return null;
  }

  /** The leaf mapping `iova`, if any. */
  #lookup(state: DomainState, iova: number): { pte: number; level: number; phys: number } | null {
    let table = state.pageTableRoot;
    for (let level = IOMMU_PT_LEVELS; level >= 1; level--) {
      const pte = table + (Math.floor(iova / 2 ** LEVEL_SHIFT(level)) % IOMMU_PTES_PER_TABLE) * 8;
      const lo = this.#memory.readU32(pte);
      if ((lo & (IOMMU_PTE_READ | IOMMU_PTE_WRITE)) === 0) return null;
      if (level === 1 || (level === 2 && (lo & IOMMU_PTE_PAGE_SIZE) !== 0)) {
        return { pte, level, phys: entryAddress(this.#memory, pte) };
      }
      table = entryAddress(this.#memory, pte);
    }
    return null;
  }

  /** Whether the 2 MiB at `iova` has no level-1 table yet (a huge leaf would hide one). */
  #emptyForHuge(state: DomainState, iova: number): boolean {
    const pte = this.#pte(state, iova, 2, false);
    return pte === null
      ? true
      : (this.#memory.readU32(pte) & (IOMMU_PTE_READ | IOMMU_PTE_WRITE)) === 0;
  }
}

function checkRange(iova: number, length: number): void {
  if (
    !Number.isSafeInteger(iova) ||
    !Number.isSafeInteger(length) ||
    iova < 0 ||
    length <= 0 ||
    iova % PAGE_SIZE !== 0 ||
    length % PAGE_SIZE !== 0 ||
    iova + length > 2 ** IOMMU_IOVA_BITS
  ) {
    throw new KernelError(
      'EINVAL',
      `IOVA range ${hex(iova)}+${hex(length)} is not page-aligned or too large`,
    );
  }
}

/** Write an entry: the address's high half first, the low half with the flags last. */
function writeEntry(memory: PhysicalMemory, at: number, address: number, flags: number): void {
  memory.writeU32(at + 4, Math.floor(address / 2 ** 32));
  memory.writeU32(at, ((address % 2 ** 32) | flags) >>> 0);
}

function entryAddress(memory: PhysicalMemory, at: number): number {
  const lo = memory.readU32(at);
  return lo - (lo % PAGE_SIZE) + memory.readU32(at + 4) * 2 ** 32;
}

/** The {@link IommuDriver} of this boot, in `ctx.services`. */
export const IOMMU_SERVICE: ServiceKey<IommuDriver> = Symbol.for('liveupdate.kernel.iommu');
