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
import type { Folio, PageAllocator } from '../page-allocator.js';

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
  readonly #root: Folio;
  readonly #contextTables = new Map<number, Folio>();
  readonly #domains = new Map<number, DomainState>();
  readonly #attached = new Map<Bdf, number>();

  /**
   * `init_dmars`: translation left on by a previous kernel is turned off (this is not a live
   * update), a fresh root table is installed and translation is enabled: a device no domain
   * claims has no context entry, so its DMA faults.
   */
  constructor(
    memory: PhysicalMemory,
    pages: PageAllocator,
    registers: IommuRegisters,
    log: KernelLog,
  ) {
    this.#memory = memory;
    this.#pages = pages;
    this.#registers = registers;
    this.#log = log;
    if (registers.translationEnabled) {
      log.warn('DMAR: translation was enabled at boot; disabling it');
      registers.setTranslationEnabled(false);
    }
    this.#root = pages.allocPages(0, { zero: true });
    registers.setRootTable(this.#root.pfn * PAGE_SIZE);
    registers.setTranslationEnabled(true);
    log.info(`DMAR: root table at ${hex(this.#root.pfn * PAGE_SIZE)}, translation enabled`);
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
    };
    this.#domains.set(id, state);
    return { id, pageTableRoot: state.pageTableRoot };
  }

  /** `iommu_domain_free`: frees the page-table frames. `EBUSY` while devices are attached. */
  freeDomain(domain: IommuDomain): void {
    const state = this.#state(domain);
    if (state.devices.size > 0) {
      throw new KernelError('EBUSY', `IOMMU domain ${state.id} has attached devices`);
    }
    this.#domains.delete(state.id);
    this.#registers.invalidateAll();
    for (const table of state.tables) this.#pages.freePages(table);
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
   * device attached nowhere is simply attached.
   */
  replaceDevice(domain: IommuDomain, bdf: Bdf): void {
    const state = this.#state(domain);
    const current = this.#attached.get(bdf);
    if (current === state.id) return;
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

  /** `iommu_detach_device`: clear the context entry; the device's DMA faults from now on. */
  detachDevice(bdf: Bdf): void {
    const id = this.#attached.get(bdf);
    if (id === undefined) return;
    const table = this.#contextTables.get(bdf >> 8);
    const entry = table ? table.pfn * PAGE_SIZE + (bdf & 0xff) * IOMMU_ENTRY_SIZE : null;
    if (entry !== null) {
      this.#memory.writeU32(entry, 0);
      this.#registers.invalidateAll();
      this.#memory.fill(entry, IOMMU_ENTRY_SIZE, 0);
    }
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
   * if any page is already mapped (nothing is mapped then), `EINVAL` for bad arguments.
   */
  map(domain: IommuDomain, iova: number, phys: number, length: number, prot: IommuProt): void {
    const state = this.#state(domain);
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
    for (let off = 0; off < length; off += PAGE_SIZE) {
      if (this.#lookup(state, iova + off) !== null) {
        throw new KernelError('EEXIST', `iommu map: IOVA ${hex(iova + off)} is already mapped`);
      }
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
   * must be unmapped whole (`EINVAL` otherwise). Returns the number of bytes unmapped.
   */
  unmap(domain: IommuDomain, iova: number, length: number): number {
    const state = this.#state(domain);
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

  /** At kexec, after the devices are reset: turn translation off, as Linux does without KHO. */
  shutdown(): void {
    this.#registers.setTranslationEnabled(false);
    this.#log.info('DMAR: translation disabled');
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
