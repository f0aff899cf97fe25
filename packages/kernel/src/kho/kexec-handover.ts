import { inject, injectable } from 'tsyringe';
import { encodeFdt, fdtNode, fdtValue, type FdtNode } from '@liveupdate/fdt';
import { KernelError, PAGE_SIZE, hex, type PhysicalMemory } from '@liveupdate/machine';
import { CommandLine } from '../command-line.js';
import { KernelLog } from '../kernel-log.js';
import type { MemoryLayout } from '../memory-layout.js';
import {
  MAX_PAGE_ORDER,
  PageAllocator,
  alignedChunks,
  checkOrder,
  getOrder,
  type Folio,
} from '../page-allocator.js';
import { KHO_INCOMING, MEMORY_LAYOUT, PHYSICAL_MEMORY } from '../tokens.js';
import { crc32c } from '../crc32c.js';
import {
  KHO_FDT_COMPATIBLE,
  KHO_FDT_COMPATIBLE_V1,
  KHO_FDT_MAX_SIZE,
  KHO_PROP_BLOB_CRC,
  KHO_PROP_BLOB_SIZE,
  KHO_PROP_FDT_CRC,
  KHO_PROP_MEMORY_MAP,
  KHO_PROP_MEMORY_MAP_CRC,
  KHO_PROP_PRESERVED_DATA,
  KHO_PROP_SCRATCH_LEN,
  KHO_PROP_SCRATCH_PHYS,
  KHO_SUBTREE_NAME,
} from './kho-abi.js';
import type { KhoIncoming } from './kho-incoming.js';
import {
  khoMapCrc,
  khoMapEntry,
  khoMapPages,
  walkKhoMapChain,
  writeKhoMapEntries,
} from './kho-memory-map.js';

/** A blob registered with {@link KexecHandover.addSubtree}. */
export interface KhoSubtree {
  readonly phys: number;
  readonly size: number;
}

/** What {@link KexecHandover.finalize} needs of the loaded kernel: the formats it reads. */
export interface KhoFinalizeTarget {
  readonly reads: { has(compatible: string): boolean };
}

/** The root ABIs {@link KexecHandover.finalize} writes. */
export type KhoFdtCompatible = typeof KHO_FDT_COMPATIBLE | typeof KHO_FDT_COMPATIBLE_V1;

/** Counts of {@link KexecHandover.stats}. */
export interface KhoStats {
  /** Folios this kernel preserves for the next one. */
  readonly preservedFolios: number;
  readonly preservedFrames: number;
  /** Folios the previous kernel preserved that nobody has restored yet. */
  readonly unrestoredFolios: number;
  readonly unrestoredFrames: number;
  /** Folios the previous kernel preserved that nobody claimed: freed by {@link KexecHandover.reclaimUnrestored}. */
  readonly unclaimedFolios: number;
  readonly unclaimedFrames: number;
}

/** Folios listed by name in the unclaimed-memory warning; the rest are counted. */
const UNCLAIMED_LISTED = 8;

/**
 * Kexec HandOver. Outgoing: tracks preserved folios and named subtrees, and at kexec writes the
 * memory map and the root FDT (`kho-v2`, checksummed; `kho-v1` for a kernel that reads only that)
 * into frames that are themselves listed as preserved.
 * Incoming: the frames the previous kernel preserved stay reserved until their owner restores
 * them — once, with the order they were preserved with. Frames nobody restores are unclaimed:
 * {@link KexecHandover.reclaimUnrestored} reports and frees them (LUO calls it when the last
 * incoming session finishes), and a kexec never hands them on (reported at {@link finalize}).
 *
 * Every call validates its input and throws a `KernelError` (`EINVAL` for bad addresses, orders,
 * scratch, memory that is not allocated, or a disabled KHO; `EEXIST` for a double preservation or
 * a duplicate subtree).
 */
@injectable()
export class KexecHandover {
  /**
   * `kho=` on the command line (default off, as `CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=n`; also off
   * when the value cannot be parsed).
   */
  readonly enabled: boolean;
  readonly #memory: PhysicalMemory;
  readonly #pages: PageAllocator;
  readonly #layout: MemoryLayout;
  readonly #log: KernelLog;
  readonly #preserved = new Map<number, number>();
  #preservedFrameCount = 0;
  /** One byte per frame of RAM, 1 where preserved: allocated at the first preservation. */
  #preservedFrames: Uint8Array | undefined;
  readonly #subtrees = new Map<string, KhoSubtree>();
  /**
   * Every folio the previous kernel preserved, sorted by pfn. Which of them are not restored yet
   * is the page allocator's memory map (a head reserved at boot, see
   * `PageAllocator.reservedOrder`), as `struct page` is in Linux: no per-folio map is built at
   * boot.
   */
  readonly #incomingFolios: readonly Folio[];
  #unrestoredFolios = 0;
  #unrestoredFrames = 0;
  readonly #incomingSubtrees: ReadonlyMap<string, KhoSubtree>;
  /** Incoming subtrees some subsystem retrieved. */
  readonly #claimedSubtrees = new Set<string>();
  #unclaimedFolios = 0;
  #unclaimedFrames = 0;
  readonly #khoBoot: boolean;
  #finalized = false;

  constructor(
    @inject(PHYSICAL_MEMORY) memory: PhysicalMemory,
    @inject(PageAllocator) pages: PageAllocator,
    @inject(MEMORY_LAYOUT) layout: MemoryLayout,
    @inject(KHO_INCOMING) incoming: KhoIncoming | null,
    @inject(CommandLine) cmdline: CommandLine,
    @inject(KernelLog) log: KernelLog,
  ) {
    this.#memory = memory;
    this.#pages = pages;
    this.#layout = layout;
    this.#log = log;
    this.enabled = cmdline.bool('kho', false);
    this.#khoBoot = incoming !== null;
    this.#incomingSubtrees = incoming?.subtrees ?? new Map();
    this.#incomingFolios = incoming?.folios ?? [];
    if (!incoming) return;
    // Once per incoming folio, in cold code inside the blackout: a local sum, and 1 << order
    // rather than 2 ** order (which calls Math.pow there); orders were checked when read.
    const folios = incoming.folios;
    let frames = 0;
    for (let i = 0; i < folios.length; i++) frames += 1 << folios[i]!.order;
    this.#unrestoredFrames = frames;
    this.#unrestoredFolios = incoming.folios.length;
    // The root FDT and the memory map are parsed: their frames go back to the allocator.
    for (const folio of incoming.handoverFolios) {
      pages.adoptReserved(folio);
      pages.freePages(folio);
      this.#unrestoredFolios--;
      this.#unrestoredFrames -= 2 ** folio.order;
    }
    if (incoming.compatible === KHO_FDT_COMPATIBLE_V1) {
      log.warn(`KHO: the incoming handover is ${KHO_FDT_COMPATIBLE_V1}: it carries no checksums`);
    }
    log.info(
      `KHO: restored handover (${incoming.compatible}) from ${hex(incoming.fdtPhys)}: ${this.#unrestoredFolios} preserved folios, subtrees: ${[...incoming.subtrees.keys()].join(', ') || 'none'}`,
    );
  }

  /** `is_kho_boot()`: whether this kernel was booted by a KHO kexec. */
  get isKhoBoot(): boolean {
    return this.#khoBoot;
  }

  get stats(): KhoStats {
    return {
      preservedFolios: this.#preserved.size,
      preservedFrames: this.#preservedFrameCount,
      unrestoredFolios: this.#unrestoredFolios,
      unrestoredFrames: this.#unrestoredFrames,
      unclaimedFolios: this.#unclaimedFolios,
      unclaimedFrames: this.#unclaimedFrames,
    };
  }

  /** `kho_preserve_folio()`: hand `folio` to the next kernel. */
  preserveFolio(folio: Folio): void {
    this.#checkPreservable(folio);
    this.#mark(folio, true);
  }

  /** `kho_unpreserve_folio()`: undo {@link preserveFolio}, with the same pfn and order. */
  unpreserveFolio(folio: Folio): void {
    this.#checkWritable();
    if (this.#preserved.get(folio.pfn) !== folio.order) {
      throw new KernelError(
        'EINVAL',
        `kho: ${hex(folio.pfn * PAGE_SIZE)} order ${folio.order} is not preserved with that order`,
      );
    }
    this.#mark(folio, false);
  }

  /**
   * `kho_preserve_pages()`: preserve `count` frames from `pfn`, cut into naturally aligned
   * power-of-two chunks. All chunks are checked before any is preserved.
   */
  preservePages(pfn: number, count: number): void {
    const chunks = checkedChunks(pfn, count);
    for (const chunk of chunks) this.#checkPreservable(chunk);
    for (const chunk of chunks) this.#mark(chunk, true);
  }

  /** `kho_unpreserve_pages()`: undo {@link preservePages} with the same arguments. */
  unpreservePages(pfn: number, count: number): void {
    this.#checkWritable();
    const chunks = checkedChunks(pfn, count);
    for (const chunk of chunks) {
      if (this.#preserved.get(chunk.pfn) !== chunk.order) {
        throw new KernelError(
          'EINVAL',
          `kho: pages ${hex(pfn * PAGE_SIZE)}+${count} were not preserved together`,
        );
      }
    }
    for (const chunk of chunks) this.#mark(chunk, false);
  }

  /**
   * `kho_alloc_preserve(size)`: a zeroed, preserved folio large enough for `size` bytes; returns
   * its physical address. `EINVAL` for size 0, `E2BIG` above the largest order, `ENOMEM`.
   */
  allocPreserve(size: number): number {
    this.#checkWritable();
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new KernelError('EINVAL', `kho: cannot allocate ${size} bytes`);
    }
    const order = getOrder(size);
    if (order > MAX_PAGE_ORDER) {
      throw new KernelError(
        'E2BIG',
        `kho: ${size} bytes exceed the largest folio (order ${MAX_PAGE_ORDER})`,
      );
    }
    const folio = this.#pages.allocPages(order, { zero: true });
    try {
      this.preserveFolio(folio);
    } catch (error) {
      this.#pages.freePages(folio);
      throw error;
    }
    return folio.pfn * PAGE_SIZE;
  }

  /** `kho_unpreserve_free()`: undo {@link allocPreserve} before a kexec. */
  unpreserveFree(phys: number): void {
    const pfn = toPfn(phys);
    const order = this.#preserved.get(pfn);
    if (order === undefined || !this.#pages.isAllocated(pfn, order)) {
      throw new KernelError('EINVAL', `kho: ${hex(phys)} was not allocated with allocPreserve`);
    }
    this.unpreserveFolio({ pfn, order });
    this.#pages.freePages({ pfn, order });
  }

  /**
   * `kho_restore_folio()`: take ownership of a folio the previous kernel preserved. Succeeds once,
   * and only with the order it was preserved with (the recorded order when `order` is omitted, as
   * upstream reads it from the page); free it later with `freePages`.
   */
  restoreFolio(phys: number, order?: number): Folio {
    if (order !== undefined) checkOrder(order);
    const pfn = toPfn(phys);
    const preserved = this.#incomingOrderOf(pfn);
    if (preserved === undefined) {
      throw new KernelError('EINVAL', `kho: ${hex(phys)} was not preserved or is already restored`);
    }
    order ??= preserved;
    if (preserved !== order) {
      throw new KernelError(
        'EINVAL',
        `kho: ${hex(phys)} was preserved with order ${preserved}, not ${order}`,
      );
    }
    const folio = { pfn, order };
    this.#pages.adoptReserved(folio);
    this.#unrestoredFolios--;
    this.#unrestoredFrames -= 2 ** order;
    return folio;
  }

  /**
   * The order the previous kernel preserved the folio at `phys` with, while nobody has restored
   * it; `undefined` for any other address. It restores nothing: a reader checks a whole list with
   * it before taking any of it, so a damaged list is refused without being half-used.
   */
  incomingOrder(phys: number): number | undefined {
    if (!Number.isSafeInteger(phys) || phys < 0 || phys % PAGE_SIZE !== 0) return undefined;
    return this.#incomingOrderOf(phys / PAGE_SIZE);
  }

  /**
   * How many of the `nrFolios` folios of `order` laid end to end from `phys` the previous kernel
   * preserved with that order and nobody has restored, in a row from the first: `nrFolios` when
   * all are, 0 for an address that is not a page-aligned one. Restores nothing, like
   * {@link incomingOrder}, but checks a run of contiguous folios in one call.
   */
  incomingRun(phys: number, nrFolios: number, order: number): number {
    if (!this.#khoBoot || !Number.isSafeInteger(phys) || phys < 0 || phys % PAGE_SIZE !== 0) {
      return 0;
    }
    return this.#pages.reservedRun(phys / PAGE_SIZE, nrFolios, order);
  }

  /**
   * `kho_restore_folio()` for a run: the `nrFolios` folios of `order` laid end to end from
   * `phys`, all or nothing. `EINVAL` naming the first folio that was not preserved with that
   * order or is already restored, before any is restored. Returns them in address order.
   */
  restoreFolios(phys: number, nrFolios: number, order: number): Folio[] {
    const pfn = this.restoreFolioRun(phys, nrFolios, order);
    const folios: Folio[] = new Array<Folio>(nrFolios);
    for (let k = 0; k < nrFolios; k++) folios[k] = { pfn: pfn + k * 2 ** order, order };
    return folios;
  }

  /**
   * {@link restoreFolios} without a folio object per folio, for an owner that keeps the run
   * whole: checks and restores the run in one step, with the same errors, and returns the pfn of
   * its first folio. Folio `k` is then `{ pfn: pfn + k * 2^order, order }`, each freed with
   * `freePages` like any restored folio.
   */
  restoreFolioRun(phys: number, nrFolios: number, order: number): number {
    checkOrder(order);
    const pfn = toPfn(phys);
    if (!Number.isSafeInteger(nrFolios) || nrFolios < 0) {
      throw new KernelError('EINVAL', `kho: cannot restore ${nrFolios} folios`);
    }
    // Checked and restored in one pass over the run: all of it, or none of it and the first folio
    // that is not held named.
    const held = this.#khoBoot ? this.#pages.tryAdoptReservedRun(pfn, nrFolios, order) : 0;
    if (held < nrFolios) {
      const at = (pfn + held * 2 ** order) * PAGE_SIZE;
      const preserved = this.incomingOrder(at);
      throw new KernelError(
        'EINVAL',
        preserved === undefined
          ? `kho: ${hex(at)} was not preserved or is already restored`
          : `kho: ${hex(at)} was preserved with order ${preserved}, not ${order}`,
      );
    }
    this.#unrestoredFolios -= nrFolios;
    this.#unrestoredFrames -= nrFolios * 2 ** order;
    return pfn;
  }

  /**
   * `kho_restore_pages()`: restore what {@link preservePages} preserved with the same `count`.
   * Returns the chunks as folios (free each with `freePages`). All or nothing.
   */
  restorePages(phys: number, count: number): Folio[] {
    const chunks = checkedChunks(toPfn(phys), count);
    for (const chunk of chunks) {
      if (this.#incomingOrderOf(chunk.pfn) !== chunk.order) {
        throw new KernelError(
          'EINVAL',
          `kho: pages ${hex(phys)}+${count} were not preserved together or are restored`,
        );
      }
    }
    return chunks.map((chunk) => this.restoreFolio(chunk.pfn * PAGE_SIZE, chunk.order));
  }

  /**
   * The order of the folio this kernel preserves for the next one that starts at `phys`, or
   * `undefined` when no preserved folio starts there: what an allocation from
   * {@link allocPreserve} covers, for checksumming it.
   */
  preservedOrder(phys: number): number | undefined {
    return phys % PAGE_SIZE === 0 ? this.#preserved.get(phys / PAGE_SIZE) : undefined;
  }

  /** `kho_restore_free()`: restore a preserved folio and free it at once. */
  restoreFree(phys: number): void {
    const pfn = toPfn(phys);
    const order = this.#incomingOrderOf(pfn);
    if (order === undefined) {
      throw new KernelError('EINVAL', `kho: ${hex(phys)} was not preserved or is already restored`);
    }
    this.#pages.freePages(this.restoreFolio(phys, order));
  }

  /**
   * `kho_add_subtree()`: publish a blob under `name` in the root FDT. The caller preserves the
   * blob itself. `EEXIST` for a name already used.
   */
  addSubtree(name: string, phys: number, size: number): void {
    this.#checkWritable();
    if (typeof name !== 'string' || !KHO_SUBTREE_NAME.test(name)) {
      throw new KernelError(
        'EINVAL',
        `kho: subtree name ${JSON.stringify(name)} is not a valid node name`,
      );
    }
    if (!Number.isSafeInteger(size) || size <= 0 || !this.#memory.contains(phys, size)) {
      throw new KernelError(
        'EINVAL',
        `kho: subtree ${name} blob ${hex(phys)}+${size} is not in RAM`,
      );
    }
    if (this.#subtrees.has(name)) throw new KernelError('EEXIST', `kho: subtree ${name} exists`);
    this.#subtrees.set(name, { phys, size });
  }

  /** The names of the subtrees published for the next kernel, in publication order. */
  subtreeNames(): string[] {
    return [...this.#subtrees.keys()];
  }

  /** `kho_remove_subtree()`: remove the subtree whose blob is at `phys`. */
  removeSubtree(phys: number): void {
    this.#checkWritable();
    for (const [name, subtree] of this.#subtrees) {
      if (subtree.phys === phys) {
        this.#subtrees.delete(name);
        return;
      }
    }
    throw new KernelError('ENOENT', `kho: no subtree at ${hex(phys)}`);
  }

  /**
   * `kho_retrieve_subtree()`: the blob the previous kernel published under `name` (validated at
   * boot: in RAM and in preserved memory). `ENOENT` when this is not a KHO boot or there is no
   * such subtree. Marks the subtree as claimed (see {@link reportUnclaimedSubtrees}).
   */
  retrieveSubtree(name: string): KhoSubtree {
    const subtree = this.#incomingSubtrees.get(name);
    if (!subtree) throw new KernelError('ENOENT', `kho: no incoming subtree ${name}`);
    this.#claimedSubtrees.add(name);
    return subtree;
  }

  /**
   * Every subtree the previous kernel published, by name, whether retrieved or not: for a
   * subsystem that finds its own name missing to look for its data under a damaged name.
   */
  get incomingSubtrees(): ReadonlyMap<string, KhoSubtree> {
    return this.#incomingSubtrees;
  }

  /**
   * Log, as an error, every incoming subtree that no subsystem retrieved. The kernel calls it once
   * its drivers and modules are up: such a subtree has a name no subsystem of this kernel knows —
   * a damaged name, or a subsystem this kernel lacks. Nothing in it is used; its memory stays reserved
   * until {@link reclaimUnrestored} frees it as unclaimed.
   */
  reportUnclaimedSubtrees(): void {
    for (const [name, subtree] of this.#incomingSubtrees) {
      if (this.#claimedSubtrees.has(name)) continue;
      this.#log.err(
        `KHO: incoming subtree "${name}" (blob ${hex(subtree.phys)}+${subtree.size}) was retrieved by no subsystem: its name is damaged or unknown to this kernel; its memory stays reserved until the last incoming session finishes, then is freed as unclaimed`,
      );
    }
  }

  /**
   * Free what the previous kernel preserved and nobody restored (unclaimed memory), and report
   * it as a warning: `why` it is reclaimed now, the subtrees never retrieved, how many folios and
   * bytes, and the first folios by address and size. Nothing to reclaim logs nothing. Returns the
   * number of frames freed. After it, a late `restoreFolio` of such a folio is `EINVAL`.
   */
  reclaimUnrestored(why: string): number {
    if (this.#unrestoredFolios === 0) return 0;
    const folios = this.#unrestored();
    let frames = 0;
    for (const folio of folios) {
      this.#pages.adoptReserved(folio);
      this.#pages.freePages(folio);
      frames += 2 ** folio.order;
    }
    this.#unrestoredFolios = 0;
    this.#unrestoredFrames = 0;
    this.#unclaimedFolios += folios.length;
    this.#unclaimedFrames += frames;
    this.#log.warn(
      `KHO: ${why}: freeing ${folios.length} preserved folios (${frames * (PAGE_SIZE / 1024)}K) nobody restored; ${this.#describeUnclaimed(folios)}`,
    );
    return frames;
  }

  /** Subtrees never retrieved, and the first unclaimed folios: where the memory came from. */
  #describeUnclaimed(folios: readonly Folio[]): string {
    const subtrees = [...this.#incomingSubtrees.keys()].filter(
      (name) => !this.#claimedSubtrees.has(name),
    );
    const listed = folios
      .slice(0, UNCLAIMED_LISTED)
      .map((f) => `${hex(f.pfn * PAGE_SIZE)}+${hex(PAGE_SIZE * 2 ** f.order)}`);
    const more = folios.length - listed.length;
    return (
      `subtrees never retrieved: ${subtrees.join(', ') || 'none'}; ` +
      `folios: ${listed.join(', ')}${more > 0 ? ` and ${more} more` : ''}`
    );
  }

  /**
   * The root ABI {@link finalize} writes for `target`: `kho-v2`, unless the target says it reads
   * `kho-v1` and not `kho-v2` (an older kernel). With no target, or one that reads neither (the
   * kexec check refuses that one before the blackout), `kho-v2`.
   */
  static formatFor(target: KhoFinalizeTarget | undefined): KhoFdtCompatible {
    return target?.reads.has(KHO_FDT_COMPATIBLE_V1) && !target.reads.has(KHO_FDT_COMPATIBLE)
      ? KHO_FDT_COMPATIBLE_V1
      : KHO_FDT_COMPATIBLE;
  }

  /**
   * Write the handover for the next kernel: the memory map and the root FDT, in freshly allocated
   * frames that are listed as preserved too, in the ABI the loaded kernel `target` reads
   * ({@link KexecHandover.formatFor}); in `kho-v2` every subtree blob, the map and the root FDT
   * are checksummed, so every blob must be final now. Returns the root FDT's physical address, or
   * `null` when KHO is off. After it, nothing may be preserved any more.
   */
  finalize(target?: KhoFinalizeTarget): number | null {
    if (!this.enabled) return null;
    const format = KexecHandover.formatFor(target);
    this.#checkWritable();
    for (const [name, subtree] of this.#subtrees) {
      const first = toPfn(subtree.phys - (subtree.phys % PAGE_SIZE));
      const last = Math.floor((subtree.phys + subtree.size - 1) / PAGE_SIZE);
      if (
        this.#preservedBitmap()
          .subarray(first, last + 1)
          .includes(0)
      ) {
        throw new KernelError(
          'EINVAL',
          `kho: subtree ${name} blob ${hex(subtree.phys)}+${subtree.size} is not in preserved memory`,
        );
      }
    }
    const allocated: Folio[] = [];
    try {
      const sums = { blobs: this.#blobCrcs(format), map: 0, fdt: 0 };
      const draft = encodeFdt(this.#rootFdt(format, 0, sums));
      if (draft.length > KHO_FDT_MAX_SIZE) {
        throw new KernelError(
          'E2BIG',
          `kho: root FDT of ${draft.length} bytes exceeds ${KHO_FDT_MAX_SIZE}`,
        );
      }
      const fdtFolio = this.#pages.allocPages(getOrder(draft.length), { zero: true });
      allocated.push(fdtFolio);
      let mapPages = khoMapPages(this.#preserved.size + 1);
      while (khoMapPages(this.#preserved.size + 1 + mapPages) > mapPages) mapPages++;
      const mapFolios: Folio[] = [];
      for (let i = 0; i < mapPages; i++) {
        const page = this.#pages.allocPages(0);
        allocated.push(page);
        mapFolios.push(page);
      }
      // Once per preserved folio (a 2 GiB memfd's thousand), inside the blackout: each entry
      // (khoMapEntry, written out in the loop) goes into one typed array, sorted natively, with
      // no object per folio.
      const entries = new Float64Array(this.#preserved.size + 1 + mapPages);
      let n = 0;
      for (const [pfn, order] of this.#preserved) entries[n++] = pfn * PAGE_SIZE + order;
      for (const folio of [fdtFolio, ...mapFolios]) entries[n++] = khoMapEntry(folio);
      entries.sort();
      writeKhoMapEntries(
        this.#memory,
        mapFolios.map((f) => f.pfn),
        entries,
      );
      const fdtPhys = fdtFolio.pfn * PAGE_SIZE;
      const mapPhys = mapFolios[0]!.pfn * PAGE_SIZE;
      sums.map = khoMapCrc(this.#memory, walkKhoMapChain(this.#memory, mapPhys));
      // fdt-crc is computed with its own value zero: encode with 0, then with the checksum of
      // that blob, which encodes to the same layout.
      const unsealed = encodeFdt(this.#rootFdt(format, mapPhys, sums));
      sums.fdt = crc32c(unsealed);
      this.#memory.write(
        fdtPhys,
        format === KHO_FDT_COMPATIBLE ? encodeFdt(this.#rootFdt(format, mapPhys, sums)) : unsealed,
      );
      this.#finalized = true;
      if (this.#unrestoredFolios > 0) {
        const unclaimed = this.#unrestored();
        const frames = unclaimed.reduce((sum, f) => sum + 2 ** f.order, 0);
        this.#log.warn(
          `KHO: ${unclaimed.length} folios (${frames * (PAGE_SIZE / 1024)}K) the previous kernel preserved were never restored and are not handed on; ${this.#describeUnclaimed(unclaimed)}`,
        );
      }
      this.#log.info(
        `KHO: handover (${format}) at ${hex(fdtPhys)}: ${this.#preserved.size} folios in ${mapPages} map pages, ${this.#subtrees.size} subtrees`,
      );
      return fdtPhys;
    } catch (error) {
      for (const folio of allocated) this.#pages.freePages(folio);
      throw error;
    }
  }

  /** Each subtree blob's CRC32C by name, for `kho-v2`; none for `kho-v1`. */
  #blobCrcs(format: KhoFdtCompatible): ReadonlyMap<string, number> {
    if (format !== KHO_FDT_COMPATIBLE) return new Map();
    return new Map(
      [...this.#subtrees].map(([name, blob]) => [
        name,
        crc32c(this.#memory.read(blob.phys, blob.size)),
      ]),
    );
  }

  /** The root FDT; in `kho-v2` with the checksums of `sums` (`blobs` by subtree name). */
  #rootFdt(
    format: KhoFdtCompatible,
    mapPhys: number,
    sums: { blobs: ReadonlyMap<string, number>; map: number; fdt: number },
  ): FdtNode {
    const le = { littleEndian: true };
    const scratch = this.#layout.scratch!;
    const v2 = format === KHO_FDT_COMPATIBLE;
    return fdtNode(
      '',
      {
        compatible: fdtValue.string(format),
        [KHO_PROP_MEMORY_MAP]: fdtValue.u64(BigInt(mapPhys), le),
        ...(v2 && { [KHO_PROP_MEMORY_MAP_CRC]: fdtValue.u32(sums.map) }),
        [KHO_PROP_SCRATCH_PHYS]: fdtValue.u64(BigInt(scratch.pfn * PAGE_SIZE), le),
        [KHO_PROP_SCRATCH_LEN]: fdtValue.u64(BigInt(scratch.frames * PAGE_SIZE), le),
        ...(v2 && { [KHO_PROP_FDT_CRC]: fdtValue.u32(sums.fdt) }),
      },
      [...this.#subtrees].map(([name, blob]) =>
        fdtNode(name, {
          [KHO_PROP_PRESERVED_DATA]: fdtValue.u64(BigInt(blob.phys), le),
          [KHO_PROP_BLOB_SIZE]: fdtValue.u64(BigInt(blob.size), le),
          ...(v2 && { [KHO_PROP_BLOB_CRC]: fdtValue.u32(sums.blobs.get(name)!) }),
        }),
      ),
    );
  }

  #checkWritable(): void {
    if (!this.enabled) throw new KernelError('EINVAL', 'kho: KHO is disabled (boot with kho=on)');
    if (this.#finalized) throw new KernelError('EBUSY', 'kho: the handover is already written');
  }

  #checkPreservable(folio: Folio): void {
    this.#checkWritable();
    const { pfn, order } = folio;
    checkOrder(order);
    const frames = 2 ** order;
    if (
      !Number.isSafeInteger(pfn) ||
      pfn < 0 ||
      pfn % frames !== 0 ||
      pfn + frames > this.#memory.frames
    ) {
      throw new KernelError(
        'EINVAL',
        `kho: pfn ${hex(pfn)} order ${order} is not an aligned folio in RAM`,
      );
    }
    if (pfn < this.#layout.firstUsablePfn || this.#pages.overlapsScratch(pfn, frames)) {
      throw new KernelError(
        'EINVAL',
        `kho: ${hex(pfn * PAGE_SIZE)} order ${order} overlaps scratch or firmware memory`,
      );
    }
    if (!this.#pages.isAllocatedRange(pfn, frames)) {
      throw new KernelError(
        'EINVAL',
        `kho: ${hex(pfn * PAGE_SIZE)} order ${order} is not allocated memory (free, or preserved by the previous kernel and not restored)`,
      );
    }
    const overlap = this.#preservedBitmap()
      .subarray(pfn, pfn + frames)
      .indexOf(1);
    if (overlap >= 0) {
      throw new KernelError(
        'EEXIST',
        `kho: ${hex((pfn + overlap) * PAGE_SIZE)} is already preserved`,
      );
    }
  }

  #mark(folio: Folio, preserve: boolean): void {
    this.#preservedBitmap().fill(preserve ? 1 : 0, folio.pfn, folio.pfn + 2 ** folio.order);
    if (preserve) this.#preserved.set(folio.pfn, folio.order);
    else this.#preserved.delete(folio.pfn);
    this.#preservedFrameCount += (preserve ? 1 : -1) * 2 ** folio.order;
  }

  /**
   * The bitmap of preserved frames, allocated at the first preservation rather than at boot:
   * a boot, inside the blackout, does no work sized by RAM for it.
   */
  #preservedBitmap(): Uint8Array {
    return (this.#preservedFrames ??= new Uint8Array(this.#memory.frames));
  }

  /** The order of the incoming folio at `pfn` while nobody has restored it, else `undefined`. */
  #incomingOrderOf(pfn: number): number | undefined {
    return this.#khoBoot ? this.#pages.reservedOrder(pfn) : undefined;
  }

  /** The incoming folios nobody has restored yet, sorted by pfn. */
  #unrestored(): Folio[] {
    return this.#incomingFolios.filter((f) => this.#pages.reservedOrder(f.pfn) === f.order);
  }
}

/** The pfn of a page-aligned physical address; `EINVAL` otherwise. */
function toPfn(phys: number): number {
  if (!Number.isSafeInteger(phys) || phys < 0 || phys % PAGE_SIZE !== 0) {
    throw new KernelError('EINVAL', `kho: ${hex(phys)} is not a page-aligned physical address`);
  }
  return phys / PAGE_SIZE;
}

function checkedChunks(pfn: number, count: number): Folio[] {
  if (!Number.isSafeInteger(pfn) || pfn < 0 || !Number.isSafeInteger(count) || count <= 0) {
    throw new KernelError('EINVAL', `kho: bad page range pfn ${pfn} count ${count}`);
  }
  return alignedChunks(pfn, count);
}
