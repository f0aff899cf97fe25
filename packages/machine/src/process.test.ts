import { describe, expect, it } from 'vitest';
import { mappingSlices, readMapping, writeMapping, type MemoryMapping } from './process.js';

/** A mapping of 12 bytes in three segments of 4, scattered over a 32-byte "RAM". */
function scattered(): { ram: Uint8Array; mapping: MemoryMapping } {
  const ram = new Uint8Array(32);
  const at = [20, 4, 12];
  return {
    ram,
    mapping: {
      address: 0,
      length: 12,
      segments: at.map((phys, i) => ({ offset: 4 * i, phys, bytes: ram.subarray(phys, phys + 4) })),
    },
  };
}

describe('mapping helpers', () => {
  it('write and read a range that crosses segments, landing in each segment’s frames', () => {
    const { ram, mapping } = scattered();
    writeMapping(mapping, 2, Uint8Array.from([1, 2, 3, 4, 5, 6, 7]));
    // Offsets 2-3 are in the segment at 20, 4-7 at 4, 8 at 12.
    expect([...ram.subarray(20, 24)]).toEqual([0, 0, 1, 2]);
    expect([...ram.subarray(4, 8)]).toEqual([3, 4, 5, 6]);
    expect([...ram.subarray(12, 16)]).toEqual([7, 0, 0, 0]);
    expect([...readMapping(mapping, 1, 9)]).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 0]);
  });

  it('gives live views, one per segment crossed', () => {
    const { ram, mapping } = scattered();
    const slices = mappingSlices(mapping, 3, 6);
    expect(slices.map((s) => s.length)).toEqual([1, 4, 1]);
    slices[1]![0] = 9;
    expect(ram[4]).toBe(9);
  });

  it('refuses a range outside the mapping', () => {
    const { mapping } = scattered();
    expect(() => readMapping(mapping, 10, 4)).toThrow(RangeError);
    expect(() => mappingSlices(mapping, -1, 2)).toThrow(RangeError);
    expect(readMapping(mapping, 12, 0)).toEqual(new Uint8Array(0));
  });
});
