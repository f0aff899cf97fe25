import { describe, expect, it } from 'vitest';
import { iommufdHwptLu, iommufdLu, iommufdLuSize, iommuLuFlbSer } from './iommufd-lu-abi.js';

describe('the iommufd-v1 handover layout', () => {
  it('places the fields at the documented offsets', () => {
    expect(iommufdLu.offsets).toEqual({ nr_hwpts: 0, __reserved: 4 });
    expect(iommufdLu.size).toBe(8);
    expect(iommufdHwptLu.offsets).toEqual({
      token: 0,
      reclaimed: 4,
      domain_id: 8,
      __reserved: 12,
      page_table_root: 16,
    });
    expect(iommufdHwptLu.size).toBe(24);
    expect(iommufdLuSize(3)).toBe(8 + 3 * 24);
    expect(iommuLuFlbSer.offsets).toEqual({ version: 0, __reserved: 4 });
  });

  it('round-trips an entry, little-endian', () => {
    const bytes = new Uint8Array(iommufdHwptLu.size);
    const entry = {
      token: 0x1234_5678,
      reclaimed: 1,
      domain_id: 7,
      __reserved: 0,
      page_table_root: 0x1_2345_6000n,
    };
    iommufdHwptLu.encodeInto(bytes, 0, entry);
    expect([...bytes.subarray(0, 4)]).toEqual([0x78, 0x56, 0x34, 0x12]);
    expect(bytes[8]).toBe(7);
    expect([...bytes.subarray(16, 21)]).toEqual([0x00, 0x60, 0x45, 0x23, 0x01]);
    expect(iommufdHwptLu.decode(bytes)).toEqual(entry);
  });
});
