import { describe, expect, it } from 'vitest';
import { PAGE_SIZE, PhysicalMemory, hex } from '@liveupdate/machine';
import { crc32c } from '../crc32c.js';
import {
  KHO_MAP_ENTRIES_PER_PAGE,
  KHO_MAP_HEADER_SIZE,
  KHO_MAP_MAGIC,
  KhoMapError,
  khoMapCrc,
  khoMapPages,
  readKhoMemoryMap,
  sortFoliosByPfn,
  walkKhoMapChain,
  writeKhoMemoryMap,
  type PreservedFolio,
} from './kho-memory-map.js';

const MiB = 1024 * 1024;
const MAX_ORDER = 10;

/** Bytes of `value` as a little-endian integer of `size` bytes. */
function le(value: number, size: number): number[] {
  const bytes: number[] = [];
  let v = BigInt(value);
  for (let i = 0; i < size; i++) {
    bytes.push(Number(v & 0xffn));
    v >>= 8n;
  }
  return bytes;
}

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a throw');
}

describe('KHO memory map', () => {
  it('holds (4096 - 16) / 8 = 510 entries per page', () => {
    expect(KHO_MAP_HEADER_SIZE).toBe(16);
    expect(KHO_MAP_ENTRIES_PER_PAGE).toBe(510);
  });

  it.each([
    [0, 1],
    [1, 1],
    [510, 1],
    [511, 2],
    [1020, 2],
    [1021, 3],
  ])('spreads %d entries over %d pages', (entries, pages) => {
    expect(khoMapPages(entries)).toBe(pages);
  });

  it('round-trips folios across a chain of pages, in chain order', () => {
    const memory = PhysicalMemory.allocate(128 * MiB);
    // 1200 entries: 510 + 510 + 180 over three pages placed out of address order.
    const folios: PreservedFolio[] = Array.from({ length: 1200 }, (_, k) => ({
      pfn: 8192 + 16 * k,
      order: k % 5,
    }));
    const pagePfns = [300, 7, 5000];
    writeKhoMemoryMap(memory, pagePfns, folios);
    expect(readKhoMemoryMap(memory, 300 * PAGE_SIZE, MAX_ORDER, null)).toEqual({
      folios,
      pages: pagePfns,
    });
    expect(memory.readU32(300 * PAGE_SIZE + 4)).toBe(510);
    expect(memory.readU32(7 * PAGE_SIZE + 4)).toBe(510);
    expect(memory.readU32(5000 * PAGE_SIZE + 4)).toBe(180);
  });

  it('round-trips an empty map as one page with no entries', () => {
    const memory = PhysicalMemory.allocate(4 * MiB);
    writeKhoMemoryMap(memory, [400], []);
    expect(readKhoMemoryMap(memory, 400 * PAGE_SIZE, MAX_ORDER, null)).toEqual({
      folios: [],
      pages: [400],
    });
  });

  it('keeps the largest order and the highest address of RAM', () => {
    const memory = PhysicalMemory.allocate(32 * MiB);
    const last = { pfn: memory.frames - 1024, order: 10 };
    writeKhoMemoryMap(memory, [300], [last, { pfn: memory.frames - 1025, order: 0 }]);
    expect(readKhoMemoryMap(memory, 300 * PAGE_SIZE, MAX_ORDER, null).folios).toEqual([
      last,
      { pfn: memory.frames - 1025, order: 0 },
    ]);
  });

  it('writes an entry above 4 GiB exactly, low bits and high bits', () => {
    const memory = PhysicalMemory.allocate(32 * MiB);
    // Above 4 GiB and above 2^40: both 32-bit halves of the entry carry bits.
    const folios = [
      { pfn: 2 ** 20 + 3 * 512, order: 9 },
      { pfn: 2 ** 28 + 1, order: 0 },
    ];
    writeKhoMemoryMap(memory, [300], folios);
    const base = 300 * PAGE_SIZE + KHO_MAP_HEADER_SIZE;
    expect(memory.readU64(base)).toBe(BigInt(folios[0]!.pfn) * 4096n + 9n);
    expect(memory.readU64(base + 8)).toBe(BigInt(folios[1]!.pfn) * 4096n);
  });

  it('lays out each page as magic, count, next and phys|order entries, little-endian', () => {
    const memory = PhysicalMemory.allocate(32 * MiB);
    const first = 0x1234;
    const second = 0x1235;
    memory.fill(first * PAGE_SIZE, 2 * PAGE_SIZE, 0xff);
    writeKhoMemoryMap(
      memory,
      [first, second],
      [
        { pfn: 0x1230, order: 4 },
        { pfn: 0x1001, order: 0 },
      ],
    );
    const page = [...memory.read(first * PAGE_SIZE, PAGE_SIZE)];
    // offset 0, 4 bytes: magic, which reads "KHOM" in memory.
    expect(String.fromCharCode(...page.slice(0, 4))).toBe('KHOM');
    expect(page.slice(0, 4)).toEqual(le(KHO_MAP_MAGIC, 4));
    // offset 4, 4 bytes: count.
    expect(page.slice(4, 8)).toEqual([2, 0, 0, 0]);
    // offset 8, 8 bytes: next page's physical address 0x1235000.
    expect(page.slice(8, 16)).toEqual([0x00, 0x50, 0x23, 0x01, 0, 0, 0, 0]);
    // offset 16: phys | order. 0x1230000 | 4 and 0x1001000 | 0.
    expect(page.slice(16, 24)).toEqual([0x04, 0x00, 0x23, 0x01, 0, 0, 0, 0]);
    expect(page.slice(24, 32)).toEqual([0x00, 0x10, 0x00, 0x01, 0, 0, 0, 0]);
    // The rest of the page is cleared, whatever was there before.
    expect(page.slice(32).every((b) => b === 0)).toBe(true);

    const tail = [...memory.read(second * PAGE_SIZE, PAGE_SIZE)];
    expect(tail.slice(0, 4)).toEqual([0x4b, 0x48, 0x4f, 0x4d]);
    expect(tail.slice(4, 8)).toEqual([0, 0, 0, 0]);
    expect(tail.slice(8, 16)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(tail.slice(16).every((b) => b === 0)).toBe(true);
  });

  it('refuses to write more folios than the pages can hold', () => {
    const memory = PhysicalMemory.allocate(4 * MiB);
    const folios = Array.from({ length: 511 }, (_, k) => ({ pfn: 512 + k, order: 0 }));
    expect(() => writeKhoMemoryMap(memory, [300], folios)).toThrow(RangeError);
  });

  describe('reading a corrupt map', () => {
    const RAM = 32 * MiB;
    const A = 300;
    const B = 301;
    const a = A * PAGE_SIZE;
    const b = B * PAGE_SIZE;

    /** A valid two-page map at A → B with one entry each (the first page holds 510 entries). */
    function setup(): PhysicalMemory {
      const memory = PhysicalMemory.allocate(RAM);
      const folios = Array.from({ length: 511 }, (_, k) => ({ pfn: 1024 + k, order: 0 }));
      writeKhoMemoryMap(memory, [A, B], folios);
      expect(readKhoMemoryMap(memory, a, MAX_ORDER, null).pages).toEqual([A, B]);
      return memory;
    }

    function expectMapError(
      memory: PhysicalMemory,
      names: string,
      start = a,
      maxOrder = MAX_ORDER,
    ): void {
      const error = thrown(() => readKhoMemoryMap(memory, start, maxOrder, null));
      expect(error).toBeInstanceOf(KhoMapError);
      expect(error.message).toContain(names);
    }

    it('rejects a bad magic and names the page', () => {
      const memory = setup();
      memory.writeU32(b, 0x4d4f484c);
      expectMapError(memory, `page ${hex(b)}: bad magic`);
    });

    it('rejects a count above 510 and names the page', () => {
      const memory = setup();
      memory.writeU32(a + 4, 511);
      expectMapError(memory, `page ${hex(a)}: count 511`);
    });

    it('rejects a next pointer outside RAM and names the page', () => {
      const memory = setup();
      memory.writeU64(b + 8, BigInt(RAM));
      expectMapError(memory, `page ${hex(b)}: next ${hex(RAM)}`);
      memory.writeU64(b + 8, 1n << 60n);
      expectMapError(memory, `page ${hex(b)}: next`);
    });

    it('rejects a next pointer that is not page aligned, naming that address', () => {
      const memory = setup();
      memory.writeU64(a + 8, BigInt(b + 8));
      expectMapError(memory, `page ${hex(b + 8)} is outside RAM or not page aligned`);
    });

    it('rejects a start address outside RAM or not page aligned', () => {
      const memory = setup();
      expectMapError(memory, hex(RAM), RAM);
      expectMapError(memory, hex(a + 1), a + 1);
    });

    it('rejects a chain that loops back, naming the page seen twice', () => {
      const memory = setup();
      memory.writeU64(b + 8, BigInt(a));
      expectMapError(memory, `loops back to page ${hex(a)}`);
      memory.writeU64(a + 8, BigInt(a));
      expectMapError(memory, `loops back to page ${hex(a)}`);
    });

    it('rejects an entry not aligned to its order, naming page and entry', () => {
      const memory = setup();
      // pfn 1025 with order 1: a 2-frame folio must start on an even frame.
      memory.writeU64(a + 16 + 8 * 3, BigInt(1025 * PAGE_SIZE + 1));
      expectMapError(
        memory,
        `page ${hex(a)} entry 3: address ${hex(1025 * PAGE_SIZE)} is not aligned`,
      );
    });

    it('rejects an entry that runs past the end of RAM, naming page and entry', () => {
      const memory = setup();
      memory.writeU64(b + 16, BigInt(RAM));
      expectMapError(memory, `page ${hex(b)} entry 0: range ${hex(RAM)}`);
      // An order-10 folio that starts, aligned, right at the end of RAM.
      memory.writeU64(b + 16, BigInt(RAM + 10));
      expectMapError(memory, `page ${hex(b)} entry 0`);
    });

    it('names the exact address of an entry far above RAM, even above 2^53', () => {
      const memory = setup();
      memory.writeU64(b + 16, 0x100000000n);
      expectMapError(memory, `page ${hex(b)} entry 0: range 0x100000000+0x1000 is outside RAM`);
      memory.writeU64(b + 16, 0xfffffffffffff000n);
      expectMapError(
        memory,
        `page ${hex(b)} entry 0: range 0xfffffffffffff000+0x1000 is outside RAM`,
      );
      memory.writeU64(b + 16, 0xfffffffffffff003n);
      expectMapError(
        memory,
        `page ${hex(b)} entry 0: address 0xfffffffffffff000 is not aligned to its order 3`,
      );
    });

    it('rejects an order above the maximum, naming page and entry', () => {
      const memory = setup();
      memory.writeU64(a + 16, BigInt(0x400 * PAGE_SIZE + 11));
      expectMapError(memory, `page ${hex(a)} entry 0: order 11 exceeds 10`);
      memory.writeU64(a + 16, BigInt(0x400 * PAGE_SIZE + 3));
      expectMapError(memory, `page ${hex(a)} entry 0: order 3 exceeds 2`, a, 2);
    });
  });

  describe('its kho-v2 checksum', () => {
    /** A map of 511 folios over pages 301 → 300 (out of address order), and its checksum. */
    function sealed(): { memory: PhysicalMemory; crc: number } {
      const memory = PhysicalMemory.allocate(32 * MiB);
      const folios = Array.from({ length: 511 }, (_, k) => ({ pfn: 1024 + k, order: 0 }));
      writeKhoMemoryMap(memory, [301, 300], folios);
      return { memory, crc: khoMapCrc(memory, walkKhoMapChain(memory, 301 * PAGE_SIZE)) };
    }

    it("covers each page's header and used entries, in chain order, and nothing else", () => {
      const { memory, crc } = sealed();
      // 510 entries on the first page, 1 on the second: 16 + 4080 and 16 + 8 bytes.
      const used = [
        ...memory.read(301 * PAGE_SIZE, 16 + 8 * 510),
        ...memory.read(300 * PAGE_SIZE, 16 + 8),
      ];
      expect(crc).toBe(crc32c(Uint8Array.from(used)));
      // The unused rest of the last page is not covered.
      memory.writeU32(300 * PAGE_SIZE + 16 + 8 + 4, 0xffffffff);
      expect(readKhoMemoryMap(memory, 301 * PAGE_SIZE, MAX_ORDER, crc).folios).toHaveLength(511);
    });

    it('catches an entry changed into another valid one, before any entry is used', () => {
      const { memory, crc } = sealed();
      // Entry 0 of the second page: pfn 1534 becomes pfn 2000, still aligned and in RAM.
      memory.writeU64(300 * PAGE_SIZE + 16, BigInt(2000 * PAGE_SIZE));
      expect(readKhoMemoryMap(memory, 301 * PAGE_SIZE, MAX_ORDER, null).folios).toHaveLength(511);
      const error = thrown(() => readKhoMemoryMap(memory, 301 * PAGE_SIZE, MAX_ORDER, crc));
      expect(error).toBeInstanceOf(KhoMapError);
      expect(error.message).toBe(
        `preserved-memory-map-crc ${hex(crc)} does not match the memory map (${hex(
          khoMapCrc(memory, walkKhoMapChain(memory, 301 * PAGE_SIZE)),
        )})`,
      );
    });

    it('catches a count lowered by one: the dropped folio would be silently free', () => {
      const { memory, crc } = sealed();
      memory.writeU32(301 * PAGE_SIZE + 4, 509);
      expect(() => readKhoMemoryMap(memory, 301 * PAGE_SIZE, MAX_ORDER, crc)).toThrow(
        /preserved-memory-map-crc .* does not match the memory map/,
      );
    });
  });
});

describe('sortFoliosByPfn', () => {
  it('returns a sorted list itself, and sorts any other by pfn, keeping every folio', () => {
    const sorted = [
      { pfn: 1024, order: 10 },
      { pfn: 2048, order: 0 },
      { pfn: 2049, order: 0 },
    ];
    expect(sortFoliosByPfn(sorted)).toBe(sorted);
    const shuffled = [
      { pfn: 2 ** 30, order: 0 },
      { pfn: 2049, order: 0 },
      { pfn: 1024, order: 10 },
      { pfn: 2048, order: 0 },
      { pfn: 3, order: 0 },
    ];
    expect(sortFoliosByPfn(shuffled)).toEqual([
      { pfn: 3, order: 0 },
      { pfn: 1024, order: 10 },
      { pfn: 2048, order: 0 },
      { pfn: 2049, order: 0 },
      { pfn: 2 ** 30, order: 0 },
    ]);
    expect(shuffled[0]).toEqual({ pfn: 2 ** 30, order: 0 });
  });
});
