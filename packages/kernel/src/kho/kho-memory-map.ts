import { PAGE_SIZE, hex, type PhysicalMemory } from '@liveupdate/machine';
import { crc32c } from '../crc32c.js';

/**
 * The KHO preserved-memory map: our layout (KHO leaves it to the implementation), written at
 * kexec into preserved frames and reached from the root FDT's `preserved-memory-map` property.
 *
 * A singly linked chain of 4 KiB pages, all fields little-endian:
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 4 | `magic` = 0x4d4f484b (`"KHOM"` in memory) |
 * | 4 | 4 | `count`: entries in this page, 0 … {@link KHO_MAP_ENTRIES_PER_PAGE} |
 * | 8 | 8 | `next`: physical address of the next page, 0 at the end |
 * | 16 | 8 × count | entries: `phys \| order` — a folio's physical address, which is aligned to at least 4 KiB, with its order (0 … `MAX_PAGE_ORDER`) in the low 12 bits |
 *
 * Every page of the chain is itself listed as an order-0 entry, and so is the root FDT, so the next
 * kernel reserves them until it has parsed them, then frees them.
 */
export const KHO_MAP_MAGIC = 0x4d4f484b;
export const KHO_MAP_HEADER_SIZE = 16;
export const KHO_MAP_ENTRIES_PER_PAGE = (PAGE_SIZE - KHO_MAP_HEADER_SIZE) / 8;

/** One preserved folio: `2^order` frames starting at `pfn`. */
export interface PreservedFolio {
  readonly pfn: number;
  readonly order: number;
}

/** Why a memory map could not be read; the message names the page or entry. */
export class KhoMapError extends Error {
  override readonly name = 'KhoMapError';
}

/** Number of chain pages needed for `entries` entries. */
export function khoMapPages(entries: number): number {
  return Math.max(1, Math.ceil(entries / KHO_MAP_ENTRIES_PER_PAGE));
}

/**
 * Write `folios`, in the order given, into the chain of pages `pagePfns` (enough of them, see
 * {@link khoMapPages}).
 */
export function writeKhoMemoryMap(
  memory: PhysicalMemory,
  pagePfns: readonly number[],
  folios: readonly PreservedFolio[],
): void {
  writeKhoMapEntries(memory, pagePfns, Float64Array.from(folios, khoMapEntry));
}

/**
 * A folio's memory map entry, `phys | order`, as a number: exact, as `phys` is a multiple of
 * 4 KiB below 2^53 and the order fits in the low 12 bits. Entries sort as their folios' addresses.
 */
export function khoMapEntry(folio: PreservedFolio): number {
  return folio.pfn * PAGE_SIZE + folio.order;
}

/**
 * {@link writeKhoMemoryMap} for entries already made ({@link khoMapEntry}), in the order given:
 * what `finalize` writes, once per preserved folio inside the blackout, from one typed array it
 * sorts natively rather than from an object per folio. Each entry is written as two 32-bit
 * halves: no `BigInt` per folio.
 */
export function writeKhoMapEntries(
  memory: PhysicalMemory,
  pagePfns: readonly number[],
  entries: Float64Array,
): void {
  let index = 0;
  for (let page = 0; page < pagePfns.length; page++) {
    const base = pagePfns[page]! * PAGE_SIZE;
    const count = Math.min(KHO_MAP_ENTRIES_PER_PAGE, entries.length - index);
    const next = page + 1 < pagePfns.length ? pagePfns[page + 1]! * PAGE_SIZE : 0;
    memory.fill(base, PAGE_SIZE, 0);
    memory.writeU32(base, KHO_MAP_MAGIC);
    memory.writeU32(base + 4, count);
    memory.writeU64(base + 8, BigInt(next));
    const view = dataView(memory.view(base + KHO_MAP_HEADER_SIZE, 8 * count));
    for (let i = 0; i < count; i++) {
      const entry = entries[index++]!;
      view.setUint32(i * 8, entry % 2 ** 32, true);
      view.setUint32(i * 8 + 4, Math.floor(entry / 2 ** 32), true);
    }
  }
  if (index !== entries.length) throw new RangeError('KHO memory map: not enough pages');
}

/** One page of a memory map chain: where it is and how many entries it holds. */
export interface KhoMapPage {
  readonly phys: number;
  readonly count: number;
}

/**
 * Walk the chain of pages starting at `phys`, checking each page's address (page aligned, in
 * RAM), magic and count, its `next` (in RAM) and that the chain does not loop; the entries are
 * not read. Throws {@link KhoMapError} naming the page.
 */
export function walkKhoMapChain(memory: PhysicalMemory, phys: number): KhoMapPage[] {
  const pages: KhoMapPage[] = [];
  const seen = new Set<number>();
  let page = phys;
  while (page !== 0) {
    if (page % PAGE_SIZE !== 0 || !memory.contains(page, PAGE_SIZE)) {
      throw new KhoMapError(`memory map page ${hex(page)} is outside RAM or not page aligned`);
    }
    if (seen.has(page)) throw new KhoMapError(`memory map chain loops back to page ${hex(page)}`);
    seen.add(page);
    const magic = memory.readU32(page);
    if (magic !== KHO_MAP_MAGIC) {
      throw new KhoMapError(
        `memory map page ${hex(page)}: bad magic ${hex(magic)}, expected ${hex(KHO_MAP_MAGIC)}`,
      );
    }
    const count = memory.readU32(page + 4);
    if (count > KHO_MAP_ENTRIES_PER_PAGE) {
      throw new KhoMapError(
        `memory map page ${hex(page)}: count ${count} exceeds ${KHO_MAP_ENTRIES_PER_PAGE}`,
      );
    }
    pages.push({ phys: page, count });
    const next = memory.readU64(page + 8);
    if (next >= BigInt(memory.size)) {
      throw new KhoMapError(`memory map page ${hex(page)}: next ${hex(next)} is outside RAM`);
    }
    page = Number(next);
  }
  return pages;
}

/**
 * The `kho-v2` checksum of a memory map (`preserved-memory-map-crc`): CRC32C over the used bytes
 * of each page in chain order — its 16-byte header and its `count` entries, not the unused rest
 * of the page — as one continued checksum.
 */
export function khoMapCrc(memory: PhysicalMemory, pages: readonly KhoMapPage[]): number {
  let crc = 0;
  for (const page of pages) {
    crc = crc32c(memory.read(page.phys, KHO_MAP_HEADER_SIZE + 8 * page.count), crc);
  }
  return crc;
}

/**
 * Read and validate a memory map chain starting at `phys`. Everything is checked before anything
 * is returned: the chain ({@link walkKhoMapChain}), then, when `expectedCrc` is given (`kho-v2`),
 * its checksum ({@link khoMapCrc}) before any entry is read, then every entry's order, alignment
 * and range. Overlaps are checked by the caller, which knows the scratch area too.
 */
export function readKhoMemoryMap(
  memory: PhysicalMemory,
  phys: number,
  maxOrder: number,
  expectedCrc: number | null,
): { folios: PreservedFolio[]; pages: number[] } {
  const chain = walkKhoMapChain(memory, phys);
  if (expectedCrc !== null) {
    const crc = khoMapCrc(memory, chain);
    if (crc !== expectedCrc) {
      throw new KhoMapError(
        `preserved-memory-map-crc ${hex(expectedCrc)} does not match the memory map (${hex(crc)})`,
      );
    }
  }
  const folios: PreservedFolio[] = [];
  for (const { phys: page, count } of chain) {
    const entries = dataView(memory.view(page + KHO_MAP_HEADER_SIZE, 8 * count));
    for (let i = 0; i < count; i++) {
      // An entry as two exact 32-bit halves: the address is a multiple of 4 KiB below 2^64,
      // which a double holds exactly, so no BigInt is needed per folio.
      const low = entries.getUint32(i * 8, true);
      const order = low & 0xfff;
      const start = entries.getUint32(i * 8 + 4, true) * 2 ** 32 + (low - order);
      if (order > maxOrder) {
        throw new KhoMapError(
          `memory map page ${hex(page)} entry ${i}: order ${order} exceeds ${maxOrder}`,
        );
      }
      // 1 << order (order is at most maxOrder here), not 2 ** order: once per entry in cold code,
      // where ** calls Math.pow.
      const size = PAGE_SIZE * (1 << order);
      if (start % size !== 0) {
        throw new KhoMapError(
          `memory map page ${hex(page)} entry ${i}: address ${hex(start)} is not aligned to its order ${order}`,
        );
      }
      if (start + size > memory.size) {
        throw new KhoMapError(
          `memory map page ${hex(page)} entry ${i}: range ${hex(start)}+${hex(size)} is outside RAM (size ${hex(memory.size)})`,
        );
      }
      folios.push({ pfn: start / PAGE_SIZE, order });
    }
  }
  return { folios, pages: chain.map((page) => page.phys / PAGE_SIZE) };
}

/**
 * `folios` sorted by pfn: the array itself when it already is (what {@link writeKhoMemoryMap}'s
 * callers write), else a sorted copy. Sorts numeric keys natively rather than calling a
 * comparator per pair, so a map of many folios costs little in a freshly booted kernel.
 */
export function sortFoliosByPfn<T extends PreservedFolio>(folios: readonly T[]): readonly T[] {
  let sorted = true;
  for (let i = 1; i < folios.length && sorted; i++) sorted = folios[i - 1]!.pfn <= folios[i]!.pfn;
  if (sorted) return folios;
  if (folios.length > 2 ** 16) return [...folios].sort((a, b) => a.pfn - b.pfn);
  // pfn * 2^16 + index stays below 2^53 for any pfn of a RAM below 2^49 bytes.
  const keys = new Float64Array(folios.length);
  folios.forEach((folio, i) => {
    keys[i] = folio.pfn * 2 ** 16 + i;
  });
  keys.sort();
  return Array.from(keys, (key) => folios[key % 2 ** 16]!);
}

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
