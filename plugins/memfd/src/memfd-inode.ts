import {
  KernelError,
  MAX_PAGE_ORDER,
  PAGE_SIZE,
  type Folio,
  type PageAllocator,
} from '@liveupdate/kernel';
import { MFD_HUGETLB, type PhysicalMemory } from '@liveupdate/machine';
import type { PreservedRun } from './memfd-format.js';

/**
 * The largest folio a memfd allocates: order 9, 2 MiB (`HPAGE_PMD_ORDER`), as shmem's huge pages.
 * Folios restored from a previous kernel may be larger (up to `MAX_PAGE_ORDER`).
 */
export const MEMFD_MAX_FOLIO_ORDER = 9;

/** A folio of the page cache with the index of its first page in the file. */
export interface MemfdFolio {
  readonly index: number;
  readonly folio: Folio;
}

/** A piece of the file backed by one folio: what `mmap` hands out. */
export interface MemfdSegment {
  readonly phys: number;
  readonly length: number;
}

/** Pages needed to hold `bytes` (`DIV_ROUND_UP(size, PAGE_SIZE)`). */
export function pagesFor(bytes: number): number {
  return Math.ceil(bytes / PAGE_SIZE);
}

const pow2 = (order: number): number => 2 ** order;

/**
 * A memfd's inode: size, seals and the page cache shared by every file of the memfd. The page
 * cache is sparse: a map from the index of a folio's first page to the folio, folios naturally
 * aligned in the file (index a multiple of `2^order`). Pages come from the buddy allocator in
 * large folios where the file allows (see {@link allocateAt}), so a 1 GiB memfd is 512 folios.
 * A retrieved memfd's folios arrive as runs (see {@link adoptRun}) and join the map on first use.
 *
 * Two rules keep the folios describable by `memfd_luo_folio_ser` (which records no order):
 * a folio never crosses the end of the file (`pagesFor(size)`) unless it lies wholly beyond it,
 * and nothing but an order-0 folio is ever allocated beyond it. Shrinking splits the folio that
 * would cross the new end (see {@link setSize}).
 *
 * This class is mechanism only; seals, the frozen state and errnos are checked by the file
 * operations (`memfd-file-operations.ts`).
 */
export class MemfdInode {
  /** Unique in this boot (`i_ino`). */
  readonly id: number;
  /** The name given to `memfd_create` (`""` for a retrieved memfd). */
  readonly name: string;
  /** The `MFD_*` flags it was created with. */
  readonly flags: number;
  /** `i_size` in bytes. */
  size = 0;
  /** `F_SEAL_*` bits. */
  seals = 0;
  /** `SHMEM_F_MAPPING_FROZEN`: preserved by LUO, so the size cannot change. */
  frozen = false;
  /** Open files of this inode; the last one's release frees the page cache. */
  openFiles = 0;
  readonly #folios = new Map<number, Folio>();
  /** Runs adopted with {@link adoptRun} that are not in `#folios` yet. */
  #runs: PreservedRun[] = [];
  readonly #pages: PageAllocator;
  readonly #memory: PhysicalMemory;

  constructor(
    id: number,
    name: string,
    flags: number,
    pages: PageAllocator,
    memory: PhysicalMemory,
  ) {
    this.id = id;
    this.name = name;
    this.flags = flags;
    this.#pages = pages;
    this.#memory = memory;
  }

  /** Whether it was created with `MFD_HUGETLB` (a hugetlbfs file in Linux). */
  get hugetlb(): boolean {
    return (this.flags & MFD_HUGETLB) !== 0;
  }

  /** Number of folios in the page cache. */
  get nrFolios(): number {
    return this.#cache.size;
  }

  /** The folios whose first page is below `endPage`, sorted by index. */
  folios(endPage = Number.POSITIVE_INFINITY): MemfdFolio[] {
    return [...this.#cache]
      .filter(([index]) => index < endPage)
      .sort((a, b) => a[0] - b[0])
      .map(([index, folio]) => ({ index, folio }));
  }

  /** The folio holding page `page`, if any. */
  lookup(page: number): MemfdFolio | undefined {
    // Walks from folio to folio (allocateRange, segments) ask for a folio's first page: one
    // map lookup, not one per order.
    const starting = this.#cache.get(page);
    if (starting) return { index: page, folio: starting };
    for (let order = 1; order <= MAX_PAGE_ORDER; order++) {
      const index = page - (page % pow2(order));
      const folio = this.#cache.get(index);
      if (folio && index + pow2(folio.order) > page) return { index, folio };
    }
    return undefined;
  }

  /** Put a folio restored from the previous kernel at `index` (the caller validated the place). */
  adopt(index: number, folio: Folio): void {
    this.#cache.set(index, folio);
  }

  /**
   * Put a run restored from the previous kernel in the page cache (the caller validated the
   * place): folio `k` is page `index + k * 2^order` on frame `pfn + k * 2^order`. One step
   * whatever the run's length: its folios enter the page cache one by one when something first
   * looks at them, and {@link segments} over adopted runs alone (the `mmap` of a memfd just
   * retrieved) hands out a run as one segment without that.
   */
  adoptRun(run: PreservedRun): void {
    this.#runs.push(run);
  }

  /** Bytes `[offset, offset + count)`, cut at the end of the file; holes read as zeros. */
  read(offset: number, count: number): Uint8Array {
    const end = Math.min(this.size, offset + count);
    if (offset >= end) return new Uint8Array(0);
    const out = new Uint8Array(end - offset);
    let at = offset;
    while (at < end) {
      const page = Math.floor(at / PAGE_SIZE);
      const hit = this.lookup(page);
      if (!hit) {
        at = Math.min(end, (page + 1) * PAGE_SIZE);
        continue;
      }
      const start = hit.index * PAGE_SIZE;
      const length = Math.min(end, start + PAGE_SIZE * pow2(hit.folio.order)) - at;
      out.set(this.#memory.view(hit.folio.pfn * PAGE_SIZE + at - start, length), at - offset);
      at += length;
    }
    return out;
  }

  /**
   * Write `data` at `offset`, allocating holes and growing the size past the end. When memory
   * runs out part way, the bytes written so far count (a short write); with none, `ENOMEM`.
   */
  write(offset: number, data: Uint8Array): number {
    const end = offset + data.length;
    if (offset > this.size) this.#zero(this.size, offset);
    const limit = Math.max(pagesFor(this.size), pagesFor(end));
    let at = offset;
    try {
      while (at < end) {
        const hit = this.#getFolio(Math.floor(at / PAGE_SIZE), limit);
        const start = hit.index * PAGE_SIZE;
        const length = Math.min(end, start + PAGE_SIZE * pow2(hit.folio.order)) - at;
        this.#memory.write(
          hit.folio.pfn * PAGE_SIZE + at - start,
          data.subarray(at - offset, at - offset + length),
        );
        at += length;
      }
    } catch (error) {
      if (at === offset || !isEnomem(error)) throw error;
    }
    this.size = Math.max(this.size, at);
    return at - offset;
  }

  /**
   * Set the size. Shrinking frees the folios wholly past the new end, splits the one that crosses
   * it (copying the part that stays into smaller folios; when memory is too short for that, the
   * folio stays and its tail is zeroed) and zeroes the rest of the last page. Growing zeroes
   * whatever cached bytes lie between the old and the new end, so they read as zeros.
   */
  setSize(size: number): void {
    const old = this.size;
    if (size < old) {
      const keep = pagesFor(size);
      this.#checkUnpinned((index, folio) => index + pow2(folio.order) > keep);
      for (const { index, folio } of this.folios()) {
        if (index >= keep) {
          this.#cache.delete(index);
          this.#pages.freePages(folio);
        } else if (index + pow2(folio.order) > keep && !this.splitFolio(index, keep)) {
          this.#zero(keep * PAGE_SIZE, (index + pow2(folio.order)) * PAGE_SIZE);
        }
      }
      this.#zero(size, keep * PAGE_SIZE);
    } else if (size > old) {
      this.#zero(old, size);
    }
    this.size = size;
  }

  /**
   * `EBUSY`, before anything changes, when a folio `affected` selects is pinned (mapped for DMA
   * by iommufd, or preserved): its frames must stay the file's.
   */
  #checkUnpinned(affected: (index: number, folio: Folio) => boolean): void {
    for (const { index, folio } of this.folios()) {
      if (affected(index, folio) && this.#pages.isPinned(folio.pfn)) {
        throw new KernelError(
          'EBUSY',
          `memfd: page ${index} is pinned (mapped for DMA); the file cannot drop it`,
        );
      }
    }
  }

  /**
   * Replace the folio at `index` by smaller ones covering only `[index, endPage)`, copying their
   * bytes. Returns `false`, changing nothing, when memory runs out.
   */
  splitFolio(index: number, endPage: number): boolean {
    const old = this.#cache.get(index);
    if (!old) return true;
    const pieces: MemfdFolio[] = [];
    try {
      for (let at = index; at < endPage;) {
        let order = old.order - 1;
        while (order > 0 && (at % pow2(order) !== 0 || at + pow2(order) > endPage)) order--;
        pieces.push({ index: at, folio: this.#pages.allocPages(order) });
        at += pow2(order);
      }
    } catch (error) {
      for (const piece of pieces) this.#pages.freePages(piece.folio);
      if (isEnomem(error)) return false;
      throw error;
    }
    this.#cache.delete(index);
    for (const { index: at, folio } of pieces) {
      const from = (old.pfn + at - index) * PAGE_SIZE;
      this.#memory.write(
        folio.pfn * PAGE_SIZE,
        this.#memory.view(from, PAGE_SIZE * pow2(folio.order)),
      );
      this.#cache.set(at, folio);
    }
    this.#pages.freePages(old);
    return true;
  }

  /**
   * Allocate every missing page of `[firstPage, endPage)`; folios may reach up to `limitPage`.
   * All or nothing: on `ENOMEM` the folios allocated here are freed again.
   */
  allocateRange(firstPage: number, endPage: number, limitPage: number): void {
    const added: MemfdFolio[] = [];
    try {
      for (let page = firstPage; page < endPage;) {
        let hit = this.lookup(page);
        if (!hit) {
          hit = this.allocateAt(page, limitPage);
          added.push(hit);
        }
        page = hit.index + pow2(hit.folio.order);
      }
    } catch (error) {
      for (const { index, folio } of added) {
        this.#cache.delete(index);
        this.#pages.freePages(folio);
      }
      throw error;
    }
  }

  /**
   * Free the folios wholly inside bytes `[offset, end)` and zero the parts of those that overlap
   * it partly (`FALLOC_FL_PUNCH_HOLE`).
   */
  punchHole(offset: number, end: number): void {
    this.#checkUnpinned((index, folio) => {
      const start = index * PAGE_SIZE;
      return start < end && start + PAGE_SIZE * pow2(folio.order) > offset;
    });
    for (const { index, folio } of this.folios()) {
      const start = index * PAGE_SIZE;
      const stop = start + PAGE_SIZE * pow2(folio.order);
      if (start >= offset && stop <= end) {
        this.#cache.delete(index);
        this.#pages.freePages(folio);
      }
    }
    this.#zero(offset, end);
  }

  /**
   * The RAM backing bytes `[offset, offset + length)`, one segment per folio (holes are allocated
   * first; beyond the end of the file, as order-0 pages).
   */
  segments(offset: number, length: number): MemfdSegment[] {
    const end = offset + length;
    const fromRuns = this.#runSegments(offset, end);
    if (fromRuns) return fromRuns;
    this.allocateRange(Math.floor(offset / PAGE_SIZE), pagesFor(end), pagesFor(this.size));
    const segments: { phys: number; length: number }[] = [];
    for (let at = offset; at < end;) {
      const hit = this.lookup(Math.floor(at / PAGE_SIZE))!;
      const start = hit.index * PAGE_SIZE;
      const stop = Math.min(end, start + PAGE_SIZE * pow2(hit.folio.order));
      const phys = hit.folio.pfn * PAGE_SIZE + at - start;
      const last = segments.at(-1);
      // Folios that follow each other in RAM make one segment: fewer views, less work per map.
      if (last && last.phys + last.length === phys) last.length += stop - at;
      else segments.push({ phys, length: stop - at });
      at = stop;
    }
    return segments;
  }

  /**
   * {@link segments} answered from the adopted runs when they are the whole page cache and cover
   * `[offset, end)` without a hole; `undefined` otherwise. A run is contiguous in the file and in
   * RAM, so each is one segment (merged with the one before when RAM continues), as the walk folio
   * by folio would find.
   */
  #runSegments(offset: number, end: number): MemfdSegment[] | undefined {
    if (this.#runs.length === 0 || this.#folios.size > 0) return undefined;
    const segments: { phys: number; length: number }[] = [];
    let at = offset;
    for (const run of this.#runs) {
      const start = run.index * PAGE_SIZE;
      const stop = start + run.nrFolios * PAGE_SIZE * pow2(run.order);
      if (stop <= at) continue;
      if (start > at) return undefined;
      const to = Math.min(end, stop);
      const phys = run.pfn * PAGE_SIZE + at - start;
      const last = segments.at(-1);
      if (last && last.phys + last.length === phys) last.length += to - at;
      else segments.push({ phys, length: to - at });
      at = to;
      if (at >= end) return segments;
    }
    return undefined;
  }

  /** Free the whole page cache (the inode is gone). */
  evict(): void {
    for (const folio of this.#cache.values()) this.#pages.freePages(folio);
    this.#cache.clear();
  }

  /**
   * Allocate the folio for page `page`, which must be a hole: the largest naturally aligned one,
   * up to {@link MEMFD_MAX_FOLIO_ORDER}, that covers no cached page and ends by `limitPage`
   * (beyond `limitPage` only order 0), falling back to smaller orders when memory is fragmented.
   * Zeroed, as shmem's pages are.
   */
  allocateAt(page: number, limitPage: number): MemfdFolio {
    for (let order = MEMFD_MAX_FOLIO_ORDER; order >= 0; order--) {
      const index = page - (page % pow2(order));
      if (
        order > 0 &&
        (index + pow2(order) > limitPage || this.#cachedWithin(index, pow2(order)))
      ) {
        continue;
      }
      let folio: Folio;
      try {
        folio = this.#pages.allocPages(order, { zero: true });
      } catch (error) {
        if (order > 0 && isEnomem(error)) continue;
        throw error;
      }
      this.#cache.set(index, folio);
      return { index, folio };
    }
    throw new KernelError('ENOMEM', 'memfd: no memory for a page');
  }

  /** The page cache, with the adopted runs put in it folio by folio first. */
  get #cache(): Map<number, Folio> {
    if (this.#runs.length > 0) {
      const runs = this.#runs;
      this.#runs = [];
      for (const { index, pfn, nrFolios, order } of runs) {
        const extent = pow2(order);
        for (let k = 0; k < nrFolios; k++) {
          this.#folios.set(index + k * extent, { pfn: pfn + k * extent, order });
        }
      }
    }
    return this.#folios;
  }

  #getFolio(page: number, limitPage: number): MemfdFolio {
    return this.lookup(page) ?? this.allocateAt(page, limitPage);
  }

  /** Whether a folio starts in `[index, index + count)`: with aligned folios, any overlap. */
  #cachedWithin(index: number, count: number): boolean {
    const cache = this.#cache;
    if (cache.size < count) {
      for (const key of cache.keys()) if (key >= index && key < index + count) return true;
      return false;
    }
    for (let page = index; page < index + count; page++) if (cache.has(page)) return true;
    return false;
  }

  /** Zero the cached bytes of `[from, to)`. */
  #zero(from: number, to: number): void {
    if (from >= to) return;
    for (const [index, folio] of this.#cache) {
      const start = index * PAGE_SIZE;
      const a = Math.max(from, start);
      const b = Math.min(to, start + PAGE_SIZE * pow2(folio.order));
      if (a < b) this.#memory.fill(folio.pfn * PAGE_SIZE + a - start, b - a, 0);
    }
  }
}

function isEnomem(error: unknown): boolean {
  return KernelError.isInstance(error) && error.code === 'ENOMEM';
}
