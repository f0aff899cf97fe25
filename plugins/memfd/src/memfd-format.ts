import {
  KHO_VMALLOC_ALLOC,
  KernelError,
  MAX_PAGE_ORDER,
  crc32c,
  PAGE_SIZE,
  getOrder,
  khoPreserveVmalloc,
  khoReadVmalloc,
  khoUnpreserveVmalloc,
  type Folio,
  type KexecHandover,
  type KhoVmalloc,
  type KhoVmallocContext,
} from '@liveupdate/kernel';
import { hex, type PhysicalMemory } from '@liveupdate/machine';
import { pagesFor, type MemfdFolio } from './memfd-inode.js';
import { MEMFD_LUO_FOLIO_DIRTY, MEMFD_LUO_FOLIO_UPTODATE } from './memfd-luo-abi.js';

/** Preserved memfds are limited to `UINT_MAX` pages (`EFBIG` at preserve), as in Linux. */
export const MAX_PRESERVED_PAGES = 0xffff_ffff;
/** The order of the folio holding a `memfd_luo_ser` (48 bytes in memfd-v2, 56 in v3: one page). */
export const MEMFD_LUO_SER_ORDER = getOrder(56);
/** The flags every folio gets from the writers of memfd-v2 and v3: all are written and dirty. */
export const MEMFD_FOLIO_FLAGS = MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE;

/**
 * Folios of a preserved memfd that follow each other in the file and in physical memory, with one
 * order: folio `k` (`k < nrFolios`) is page `index + k * 2^order` and frame `pfn + k * 2^order`.
 * memfd-v2 lists runs of one folio, memfd-v3 the longest runs it can.
 */
export interface PreservedRun {
  readonly index: number;
  readonly pfn: number;
  readonly nrFolios: number;
  readonly order: number;
}

/** A preserved memfd as a reader found it, every field checked. */
export interface PreservedMemfd {
  readonly size: number;
  readonly pos: number;
  /** As written; seals or flags this kernel does not know are the handler's to refuse. */
  readonly seals: number;
  readonly flags: number;
  /** Sorted by index; they tile `[0, size)`. */
  readonly runs: readonly PreservedRun[];
  /** The folios holding the entry array and the `kho_vmalloc_chunk`s listing them. */
  readonly arrayFolios: readonly Folio[];
}

/** What a reader needs of the kernel. */
export interface MemfdReadContext {
  readonly memory: PhysicalMemory;
  readonly kho: KexecHandover;
}

/** What `preserve` hands a writer: the file's state, its folios pinned and preserved already. */
export interface MemfdState {
  readonly pos: number;
  readonly size: number;
  readonly seals: number;
  /** Sorted by index, tiling `[0, size)`. */
  readonly folios: readonly MemfdFolio[];
}

/** What a writer preserved besides the folios: freed by {@link unwriteMemfd}. */
export interface WrittenMemfd {
  readonly compatible: string;
  readonly serPhys: number;
  readonly array: KhoVmalloc | null;
}

/**
 * One layout of the memfd handover, its writer beside its reader. Both layouts start with the
 * same header (pos, size, seals, flags, an entry count and a `kho_vmalloc` of entries), so the
 * checks of the header and of the folios the entries name are shared (this file); each layout
 * decodes and checks its own entries.
 */
export interface MemfdFormat {
  readonly compatible: string;
  /**
   * Read the `memfd_luo_ser` at `serPhys` and its entries, restoring nothing, and refuse every
   * value this layout's writer cannot produce: `EINVAL` for the header, `EIO` for an entry.
   */
  read(ctx: MemfdReadContext, serPhys: number): PreservedMemfd;
  /** Preserve a `memfd_luo_ser` and its entries for `state`. All or nothing. */
  write(ctx: KhoVmallocContext, state: MemfdState): WrittenMemfd;
  /** Rewrite `pos` in a `memfd_luo_ser` this kernel wrote. */
  setPos(memory: PhysicalMemory, serPhys: number, pos: number): void;
  /** The entry count as written, for log lines (`nr_folios 3`). */
  listed(memory: PhysicalMemory, serPhys: number): string;
}

/** The fields of `memfd_luo_ser` every layout has, at the same offsets. */
export interface MemfdSerFields {
  readonly pos: bigint;
  readonly size: bigint;
  readonly seals: number;
  readonly flags: number;
  /** The entry count (`nr_runs`, `nr_folios`). */
  readonly count: bigint;
  /** The `kho_vmalloc` of the entries (`runs`, `folios`). */
  readonly array: { first: bigint; totalPages: number; flags: number; order: number };
  /**
   * CRC32C of the `count` entries (`runs_crc`), or `null` in a layout without one (memfd-v2).
   * LUO's `data_crc` covers the `memfd_luo_ser` page, not the array beside it.
   */
  readonly arrayCrc: number | null;
  /** The `reserved` field after the checksum: 0 (and 0 in a layout without one). */
  readonly reserved: number;
}

/** An entry's error: `EIO` naming the `memfd_luo_ser`, the entry and what is wrong. */
export type EntryError = (what: string) => never;

/** What one layout defines; {@link defineMemfdFormat} builds its reader and writer from it. */
export interface MemfdLayout {
  readonly compatible: string;
  /** The names of the entry count and of the entry array in `memfd_luo_ser`, for messages. */
  readonly countName: string;
  readonly arrayName: string;
  /** The name of the array's checksum (`runs_crc`), in a layout that has one. */
  readonly arrayCrcName?: string;
  /** `memfd_luo_ser` in this layout's codec. */
  readonly serSize: number;
  decodeSer(bytes: Uint8Array): MemfdSerFields;
  encodeSer(fields: MemfdSerFields): Uint8Array;
  /** One entry's struct name and size. */
  readonly entryName: string;
  readonly entrySize: number;
  /**
   * Decode `count` entries from `data` as runs, refusing through `bad(i)` what only this layout
   * can get wrong; {@link checkRuns} checks the rest.
   */
  decodeRuns(
    data: Uint8Array,
    count: number,
    endPage: number,
    bad: (i: number) => EntryError,
  ): PreservedRun[];
  /** The entries listing `folios` (sorted by index), and how many. */
  encodeEntries(folios: readonly MemfdFolio[]): { data: Uint8Array; count: number };
}

/**
 * A layout's {@link MemfdFormat}: the header's checks, the entry array's reading and writing, and
 * {@link checkRuns}, shared by every layout.
 */
export function defineMemfdFormat(layout: MemfdLayout): MemfdFormat {
  const decode = (memory: PhysicalMemory, serPhys: number): MemfdSerFields =>
    layout.decodeSer(memory.read(serPhys, layout.serSize));
  return {
    compatible: layout.compatible,
    read(ctx, serPhys) {
      const where = `memfd_luo_ser at ${hex(serPhys)}`;
      const ser = decode(ctx.memory, serPhys);
      const entries = readMemfdEntries(ctx, where, layout, ser);
      const bad =
        (i: number): EntryError =>
        (what) => {
          throw new KernelError('EIO', `memfd: ${where}: ${layout.entryName}[${i}]: ${what}`);
        };
      const runs = layout.decodeRuns(entries.data, entries.count, entries.endPage, bad);
      checkRuns(ctx, runs, entries.endPage, entries.arrayFolios, bad);
      return {
        size: entries.size,
        pos: entries.pos,
        seals: ser.seals,
        flags: ser.flags,
        runs,
        arrayFolios: entries.arrayFolios,
      };
    },
    write(ctx, state) {
      const { data, count } = layout.encodeEntries(state.folios);
      const serPhys = ctx.kho.allocPreserve(PAGE_SIZE * 2 ** MEMFD_LUO_SER_ORDER);
      let array: KhoVmalloc | null = null;
      try {
        array = count > 0 ? khoPreserveVmalloc(ctx, data) : null;
        const ser = layout.encodeSer({
          pos: BigInt(state.pos),
          size: BigInt(state.size),
          seals: state.seals,
          flags: 0,
          count: BigInt(count),
          array: {
            first: BigInt(array?.first ?? 0),
            totalPages: array?.totalPages ?? 0,
            flags: array?.flags ?? 0,
            order: array?.order ?? 0,
          },
          arrayCrc: crc32c(data),
          reserved: 0,
        });
        ctx.memory.write(serPhys, ser);
      } catch (error) {
        if (array) khoUnpreserveVmalloc(ctx, array);
        ctx.kho.unpreserveFree(serPhys);
        throw error;
      }
      return { compatible: layout.compatible, serPhys, array };
    },
    setPos(memory, serPhys, pos) {
      memory.write(serPhys, layout.encodeSer({ ...decode(memory, serPhys), pos: BigInt(pos) }));
    },
    listed: (memory, serPhys) => `${layout.countName} ${decode(memory, serPhys).count}`,
  };
}

/** A header checked, and the bytes of its entry array (empty for an empty file). */
interface MemfdEntries {
  readonly size: number;
  readonly pos: number;
  readonly endPage: number;
  readonly count: number;
  readonly data: Uint8Array;
  readonly arrayFolios: readonly Folio[];
}

/**
 * Check a `memfd_luo_ser` header and read its `count` entries of `entrySize` bytes, `EINVAL`
 * naming the field for anything the writer cannot produce: `size` beyond `UINT_MAX` pages or RAM,
 * `pos` beyond any offset, a count of 0 for a non-empty file (or not 0 for an empty one) or more
 * than its pages, `reserved` not 0, an array description that is not the writer's for `count`
 * entries (order 0, `KHO_VMALLOC_ALLOC`, exactly the pages they need, zeros after the last
 * entry), or a chain KHO does not hold (see `khoReadVmalloc`). Then, in a layout with an array
 * checksum, `EIO` when the entries do not match it: nothing of them is used.
 */
function readMemfdEntries(
  ctx: MemfdReadContext,
  where: string,
  { countName, arrayName, arrayCrcName, entrySize }: MemfdLayout,
  header: MemfdSerFields,
): MemfdEntries {
  const { memory } = ctx;
  const { array } = header;
  const invalid = (what: string): never => {
    throw new KernelError('EINVAL', `memfd: ${where}: ${what}`);
  };
  const maxPages = Math.min(MAX_PRESERVED_PAGES, memory.frames);
  if (header.size > BigInt(maxPages) * BigInt(PAGE_SIZE)) {
    invalid(
      `size ${header.size} is more than the ${maxPages} pages a preserved memfd can have here`,
    );
  }
  if (header.pos > BigInt(Number.MAX_SAFE_INTEGER)) {
    invalid(`pos ${header.pos} is beyond any offset`);
  }
  if (header.reserved !== 0) invalid(`reserved ${hex(header.reserved)} is not 0`);
  const size = Number(header.size);
  const pos = Number(header.pos);
  const endPage = pagesFor(size);
  if ((header.count === 0n) !== (endPage === 0) || header.count > BigInt(endPage)) {
    invalid(`${countName} ${header.count} for size ${size} (${endPage} pages)`);
  }
  const count = Number(header.count);
  const checkCrc = (entries: Uint8Array): void => {
    if (header.arrayCrc === null) return;
    const actual = crc32c(entries);
    if (actual !== header.arrayCrc) {
      throw new KernelError(
        'EIO',
        `memfd: ${where}: ${arrayCrcName} ${hex(header.arrayCrc)} does not match its ${count} ${arrayName} entries (crc32c ${hex(actual)})`,
      );
    }
  };
  if (count === 0) {
    if (array.first !== 0n || array.totalPages !== 0 || array.flags !== 0 || array.order !== 0) {
      invalid(
        `${arrayName} (first ${hex(array.first)}, total_pages ${array.totalPages}, flags ${hex(array.flags)}, order ${array.order}) for no entries`,
      );
    }
    checkCrc(new Uint8Array(0));
    return { size, pos, endPage, count, data: new Uint8Array(0), arrayFolios: [] };
  }
  const used = count * entrySize;
  const arrayPages = Math.ceil(used / PAGE_SIZE);
  if (array.order !== 0 || array.flags !== KHO_VMALLOC_ALLOC || array.totalPages !== arrayPages) {
    invalid(
      `${arrayName} (total_pages ${array.totalPages}, flags ${hex(array.flags)}, order ${array.order}) is not the array of ${count} entries (${arrayPages} pages, flags ${hex(KHO_VMALLOC_ALLOC)}, order 0)`,
    );
  }
  if (array.first >= BigInt(memory.size)) {
    invalid(`${arrayName}.first ${hex(array.first)} is outside RAM`);
  }
  let contents;
  try {
    contents = khoReadVmalloc(ctx, { ...array, first: Number(array.first) });
  } catch (error) {
    return invalid(`${arrayName}: ${(error as Error).message}`);
  }
  if (!isZero(contents.data.subarray(used))) {
    invalid(`the ${arrayName} array holds bytes after its ${count} entries`);
  }
  checkCrc(contents.data.subarray(0, used));
  return { size, pos, endPage, count, data: contents.data, arrayFolios: contents.folios };
}

/** Whether every byte of `bytes` is 0 (a loop, not a callback per byte). */
function isZero(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** `EIO` unless `flags` are what the writers give every folio, `DIRTY | UPTODATE`. */
export function checkFolioFlags(flags: number, bad: EntryError): void {
  if (flags !== MEMFD_FOLIO_FLAGS) {
    bad(`flags ${hex(flags)}, not DIRTY|UPTODATE (${hex(MEMFD_FOLIO_FLAGS)})`);
  }
}

/**
 * `EIO` unless the runs tile `[0, endPage)` in order with aligned folios of at most
 * `MAX_PAGE_ORDER`, each on frames in RAM (not pfn 0) aligned to its order, that KHO holds with
 * that order and that no other run, nor the entry array (`arrayFolios`), names. `bad(i)` names
 * entry `i`.
 */
export function checkRuns(
  ctx: MemfdReadContext,
  runs: readonly PreservedRun[],
  endPage: number,
  arrayFolios: readonly Folio[],
  bad: (i: number) => EntryError,
): void {
  const { memory, kho } = ctx;
  let expected = 0;
  runs.forEach(({ index, pfn, nrFolios, order }, i) => {
    const fail = bad(i);
    if (index !== expected) {
      fail(
        i === 0
          ? `index ${index}: the first folio must be at page 0`
          : `index ${index}: the previous entry ends at page ${expected}`,
      );
    }
    if (order > MAX_PAGE_ORDER) fail(`order ${order} is above MAX_PAGE_ORDER ${MAX_PAGE_ORDER}`);
    const extent = 2 ** order;
    const span = nrFolios * extent;
    if (index % extent !== 0) fail(`index ${index} is not aligned to order ${order}`);
    if (index + span > endPage) {
      fail(`index ${index} + ${span} pages crosses the end of the file (page ${endPage})`);
    }
    if (pfn === 0) fail('pfn 0');
    if (pfn % extent !== 0) fail(`pfn ${hex(pfn)} is not an order-${order} folio: not aligned`);
    if (pfn + span > memory.frames) {
      fail(`pfn ${hex(pfn)} + ${span} frames crosses the end of RAM (${memory.frames} frames)`);
    }
    // One call for the run; the first folio KHO does not hold is named as before.
    const held = kho.incomingRun(pfn * PAGE_SIZE, nrFolios, order);
    if (held < nrFolios) {
      const at = pfn + held * extent;
      const preserved = kho.incomingOrder(at * PAGE_SIZE);
      fail(
        `pfn ${hex(at)} order ${order} ${preserved === undefined ? 'was not preserved or is already restored' : `was preserved with order ${preserved}`}`,
      );
    }
    expected = index + span;
  });
  if (expected !== endPage) {
    bad(runs.length - 1)(`the entries end at page ${expected}, not at the file's end ${endPage}`);
  }
  checkDisjoint(runs, arrayFolios, bad);
}

/** `EIO` when a frame is listed twice: by two runs, or by a run and the entry array. */
function checkDisjoint(
  runs: readonly PreservedRun[],
  arrayFolios: readonly Folio[],
  bad: (i: number) => EntryError,
): void {
  const all = [
    ...runs.map((r, i) => ({ pfn: r.pfn, frames: r.nrFolios * 2 ** r.order, entry: i })),
    ...arrayFolios.map((f) => ({ pfn: f.pfn, frames: 2 ** f.order, entry: -1 })),
  ].sort((a, b) => a.pfn - b.pfn);
  all.forEach((range, i) => {
    const next = all[i + 1];
    if (next && next.pfn < range.pfn + range.frames) {
      const [entry, other] = next.entry >= 0 ? [next, range] : [range, next];
      bad(entry.entry)(
        `pfn ${hex(entry.pfn)} lies in ${other.entry >= 0 ? `entry ${other.entry}` : 'the entry array'} (pfn ${hex(other.pfn)}, ${other.frames} frames)`,
      );
    }
  });
}

/** Unpreserve and free what a {@link MemfdFormat.write} preserved. */
export function unwriteMemfd(ctx: KhoVmallocContext, written: WrittenMemfd): void {
  if (written.array) khoUnpreserveVmalloc(ctx, written.array);
  ctx.kho.unpreserveFree(written.serPhys);
}
