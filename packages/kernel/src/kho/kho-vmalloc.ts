import { KernelError, PAGE_SIZE, hex, type PhysicalMemory } from '@liveupdate/machine';
import { checkOrder, type Folio, type PageAllocator } from '../page-allocator.js';
import type { KexecHandover } from './kexec-handover.js';

/**
 * `kho_preserve_vmalloc()` and friends (`include/linux/kho/abi/kexec_handover.h`), in our terms:
 * there are no virtual mappings, so a "vmalloc area" is a byte array copied into runs of
 * `2^order` pages, listed in a chain of `struct kho_vmalloc_chunk` pages. Everything is preserved
 * through KHO and described by a `struct kho_vmalloc` that the caller stores in its own preserved
 * structure (memfd: `memfd_luo_ser.folios`):
 *
 * `struct kho_vmalloc` (16 bytes): `first` u64 @0 (phys of the first chunk), `total_pages` u32 @8,
 * `flags` u16 @12 ({@link KHO_VMALLOC_ALLOC}, {@link KHO_VMALLOC_HUGE_VMAP}), `order` u16 @14.
 *
 * `struct kho_vmalloc_chunk` (one page): `hdr.next` u64 @0 (phys of the next chunk, 0 at the end),
 * `phys[511]` u64 @8 (each run's phys, zero-terminated unless all 511 are used).
 */
export const KHO_VMALLOC_ALLOC = 0x1;
/** The area was allocated with huge mappings allowed (`VM_ALLOW_HUGE_VMAP`): here, `order > 0`. */
export const KHO_VMALLOC_HUGE_VMAP = 0x2;
const KHO_VMALLOC_FLAGS_MASK = KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP;
/** Offset of `phys[]` in `struct kho_vmalloc_chunk`, after `hdr.next`. */
const CHUNK_PHYS_OFFSET = 8;
/** Entries of `kho_vmalloc_chunk.phys[]`: 511. */
export const KHO_VMALLOC_CHUNK_ENTRIES = (PAGE_SIZE - CHUNK_PHYS_OFFSET) / 8;

/** The fields of `struct kho_vmalloc`; physical addresses as numbers. */
export interface KhoVmalloc {
  readonly first: number;
  readonly totalPages: number;
  readonly flags: number;
  readonly order: number;
}

/** What the helpers need of the kernel: a `ModuleContext` has all three. */
export interface KhoVmallocContext {
  readonly memory: PhysicalMemory;
  readonly pages: PageAllocator;
  readonly kho: KexecHandover;
}

/**
 * `kho_preserve_vmalloc()`: copy `data` into freshly allocated runs of `2^order` pages (the tail of
 * the last run zeroed), build the chunk chain, and preserve runs and chunks. All or nothing: on
 * failure everything allocated is unpreserved and freed. `EINVAL` for empty data or a bad order,
 * `ENOMEM`, or KHO's own errors.
 */
export function khoPreserveVmalloc(
  ctx: KhoVmallocContext,
  data: Uint8Array,
  order = 0,
): KhoVmalloc {
  const { memory, pages, kho } = ctx;
  checkOrder(order);
  const runBytes = PAGE_SIZE * 2 ** order;
  const runs = Math.ceil(data.length / runBytes);
  const totalPages = runs * 2 ** order;
  if (data.length === 0 || totalPages > 0xffff_ffff) {
    throw new KernelError('EINVAL', `kho: cannot preserve a vmalloc area of ${data.length} bytes`);
  }
  const allocated: Folio[] = [];
  const preserved: Folio[] = [];
  const take = (folioOrder: number, zero: boolean): Folio => {
    const folio = pages.allocPages(folioOrder, { zero });
    allocated.push(folio);
    kho.preserveFolio(folio);
    preserved.push(folio);
    return folio;
  };
  try {
    const chunks: Folio[] = [];
    for (let run = 0; run < runs; run++) {
      const entry = run % KHO_VMALLOC_CHUNK_ENTRIES;
      if (entry === 0) {
        const chunk = take(0, true);
        const previous = chunks.at(-1);
        if (previous) memory.writeU64(previous.pfn * PAGE_SIZE, BigInt(chunk.pfn * PAGE_SIZE));
        chunks.push(chunk);
      }
      const folio = take(order, false);
      const phys = folio.pfn * PAGE_SIZE;
      const bytes = data.subarray(run * runBytes, (run + 1) * runBytes);
      memory.write(phys, bytes);
      memory.fill(phys + bytes.length, runBytes - bytes.length, 0);
      memory.writeU64(chunks.at(-1)!.pfn * PAGE_SIZE + CHUNK_PHYS_OFFSET + entry * 8, BigInt(phys));
    }
    return {
      first: chunks[0]!.pfn * PAGE_SIZE,
      totalPages,
      flags: KHO_VMALLOC_ALLOC | (order > 0 ? KHO_VMALLOC_HUGE_VMAP : 0),
      order,
    };
  } catch (error) {
    for (const folio of preserved) kho.unpreserveFolio(folio);
    for (const folio of allocated) pages.freePages(folio);
    throw error;
  }
}

/**
 * `kho_unpreserve_vmalloc()` (and the `vfree()` after it): before a kexec, unpreserve and free
 * every run and chunk of an area {@link khoPreserveVmalloc} returned in this kernel.
 */
export function khoUnpreserveVmalloc(ctx: KhoVmallocContext, preservation: KhoVmalloc): void {
  const { memory, pages, kho } = ctx;
  const release = (folio: Folio): void => {
    kho.unpreserveFolio(folio);
    pages.freePages(folio);
  };
  let chunk = preservation.first;
  while (chunk !== 0) {
    for (const phys of chunkEntries(memory, chunk)) {
      release({ pfn: phys / PAGE_SIZE, order: preservation.order });
    }
    // Read before the free: freed pages may be poisoned.
    const next = Number(memory.readU64(chunk));
    release({ pfn: chunk / PAGE_SIZE, order: 0 });
    chunk = next;
  }
}

/** What {@link khoReadVmalloc} found: the area's bytes and the folios holding them. */
export interface KhoVmallocContents {
  /** The `total_pages` pages of the area, copied out. */
  readonly data: Uint8Array;
  /** Every chunk (order 0) and run (the area's order), as restoring the area would take them. */
  readonly folios: readonly Folio[];
}

/**
 * Read a preserved vmalloc area in the next kernel without restoring anything: every field is
 * checked, and every chunk and run must be an aligned folio in RAM that the previous kernel
 * preserved with that order, not restored yet, and listed once (so a cyclic chain is refused);
 * the runs must add up to `total_pages`. `EINVAL` naming the field and value otherwise. A reader
 * that must check more before it takes anything (memfd checks its folio array) reads first, then
 * restores with {@link khoRestoreVmalloc}.
 */
export function khoReadVmalloc(
  ctx: Pick<KhoVmallocContext, 'memory' | 'kho'>,
  preservation: KhoVmalloc,
): KhoVmallocContents {
  const { memory, kho } = ctx;
  const { first, totalPages, flags, order } = preservation;
  const fail = (reason: string, cause?: unknown): never => {
    throw new KernelError('EINVAL', `kho: vmalloc area at ${hex(first)}: ${reason}`, { cause });
  };
  if ((flags & ~KHO_VMALLOC_FLAGS_MASK) !== 0) fail(`unknown flags ${hex(flags)}`);
  try {
    checkOrder(order);
  } catch (error) {
    fail(`order ${order} is invalid`, error);
  }
  const runPages = 2 ** order;
  if (!Number.isSafeInteger(totalPages) || totalPages <= 0 || totalPages % runPages !== 0) {
    fail(`total_pages ${totalPages} is not a positive multiple of 2^${order}`);
  }
  if (first === 0) fail('no first chunk');
  // The largest RAM can hold no more pages; checked before allocating the copy.
  if (totalPages > memory.frames) fail(`total_pages ${totalPages} exceeds RAM`);

  const data = new Uint8Array(totalPages * PAGE_SIZE);
  const folios: Folio[] = [];
  const seen = new Set<number>();
  const take = (phys: number, folioOrder: number, what: string): void => {
    const pfn = phys / PAGE_SIZE;
    if (seen.has(pfn)) fail(`${what} ${hex(phys)} is listed twice`);
    const preserved = kho.incomingOrder(phys);
    if (preserved !== folioOrder) {
      fail(
        `${what} ${hex(phys)} order ${folioOrder} ${preserved === undefined ? 'was not preserved or is already restored' : `was preserved with order ${preserved}`}`,
      );
    }
    seen.add(pfn);
    folios.push({ pfn, order: folioOrder });
  };
  let index = 0;
  let chunk = first;
  while (chunk !== 0) {
    take(chunk, 0, 'chunk');
    for (const phys of chunkEntries(memory, chunk)) {
      if (index + runPages > totalPages) fail(`more pages than total_pages ${totalPages}`);
      take(phys, order, 'run');
      data.set(memory.read(phys, runPages * PAGE_SIZE), index * PAGE_SIZE);
      index += runPages;
    }
    const next = memory.readU64(chunk);
    if (next >= BigInt(memory.size)) fail(`chunk ${hex(chunk)}: next ${hex(next)} is outside RAM`);
    chunk = Number(next);
  }
  if (index !== totalPages) fail(`found ${index} pages, expected ${totalPages}`);
  return { data, folios };
}

/**
 * `kho_restore_vmalloc()` (and the `vfree()` after it): in the next kernel, read the area as
 * {@link khoReadVmalloc} does, then restore every chunk and run and give all of them back to the
 * allocator (a JS array stands in for the new mapping). All or nothing: a corrupt or cyclic chain
 * is refused with `EINVAL` before any page is restored, never read as garbage.
 */
export function khoRestoreVmalloc(ctx: KhoVmallocContext, preservation: KhoVmalloc): Uint8Array {
  const { data, folios } = khoReadVmalloc(ctx, preservation);
  for (const { pfn, order } of folios) {
    ctx.pages.freePages(ctx.kho.restoreFolio(pfn * PAGE_SIZE, order));
  }
  return data;
}

/** The non-zero `phys[]` entries of the chunk at `chunk`, as safe numbers (`EINVAL` otherwise). */
function chunkEntries(memory: PhysicalMemory, chunk: number): number[] {
  const entries: number[] = [];
  for (let i = 0; i < KHO_VMALLOC_CHUNK_ENTRIES; i++) {
    const phys = memory.readU64(chunk + CHUNK_PHYS_OFFSET + i * 8);
    if (phys === 0n) break;
    if (phys >= BigInt(memory.size)) {
      throw new KernelError(
        'EINVAL',
        `kho: vmalloc chunk ${hex(chunk)} entry ${i}: ${hex(phys)} is outside RAM`,
      );
    }
    entries.push(Number(phys));
  }
  return entries;
}
