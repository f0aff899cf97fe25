import { describe, expect, it } from 'vitest';
import {
  MEMFD_LUO_ALL_SEALS,
  MEMFD_LUO_FH_COMPATIBLE,
  MEMFD_LUO_FH_COMPATIBLE_V2,
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_UPTODATE,
  khoVmallocSer,
  memfdLuoFolioSer,
  memfdLuoRunSer,
  memfdLuoSer,
  memfdLuoSerV3,
  packPfnFlags,
  unpackPfnFlags,
} from './memfd-luo-abi.js';

const view = (bytes: Uint8Array): DataView => new DataView(bytes.buffer, bytes.byteOffset);

describe('the memfd ABI', () => {
  it('names the layouts memfd-v3 (newest) and memfd-v2, and carries the six uAPI seals', () => {
    expect(MEMFD_LUO_FH_COMPATIBLE).toBe('memfd-v3');
    expect(MEMFD_LUO_FH_COMPATIBLE_V2).toBe('memfd-v2');
    expect(MEMFD_LUO_ALL_SEALS).toBe(0x3f);
    expect([MEMFD_LUO_FOLIO_DIRTY, MEMFD_LUO_FOLIO_UPTODATE]).toEqual([1, 2]);
  });

  it('lays out struct kho_vmalloc in 16 bytes as documented', () => {
    expect(khoVmallocSer.size).toBe(16);
    expect(khoVmallocSer.offsets).toEqual({ first: 0, totalPages: 8, flags: 12, order: 14 });
    const value = { first: 0x1234_5000n, totalPages: 3, flags: 1, order: 2 };
    const bytes = khoVmallocSer.encode(value);
    expect(view(bytes).getBigUint64(0, true)).toBe(0x1234_5000n);
    expect(view(bytes).getUint32(8, true)).toBe(3);
    expect(view(bytes).getUint16(12, true)).toBe(1);
    expect(view(bytes).getUint16(14, true)).toBe(2);
    expect(khoVmallocSer.decode(bytes)).toEqual(value);
  });

  it('lays out struct memfd_luo_ser in 48 bytes as documented, kho_vmalloc nested at 32', () => {
    expect(memfdLuoSer.size).toBe(48);
    expect(memfdLuoSer.offsets).toEqual({
      pos: 0,
      size: 8,
      seals: 16,
      flags: 20,
      nrFolios: 24,
      folios: 32,
    });
    const value = {
      pos: 7n,
      size: 0x4000_0000n,
      seals: 0x6,
      flags: 0,
      nrFolios: 512n,
      folios: { first: 0x20_0000n, totalPages: 2, flags: 1, order: 0 },
    };
    const bytes = memfdLuoSer.encode(value);
    const v = view(bytes);
    expect(v.getBigUint64(0, true)).toBe(7n);
    expect(v.getBigUint64(8, true)).toBe(0x4000_0000n);
    expect(v.getUint32(16, true)).toBe(0x6);
    expect(v.getUint32(20, true)).toBe(0);
    expect(v.getBigUint64(24, true)).toBe(512n);
    expect(v.getBigUint64(32, true)).toBe(0x20_0000n);
    expect(v.getUint32(40, true)).toBe(2);
    expect(v.getUint16(44, true)).toBe(1);
    expect(v.getUint16(46, true)).toBe(0);
    expect(memfdLuoSer.decode(bytes)).toEqual(value);
  });

  it('lays out struct memfd_luo_folio_ser in 16 bytes: pfn in bits 0-51, flags in 52-63, then index', () => {
    expect(memfdLuoFolioSer.size).toBe(16);
    expect(memfdLuoFolioSer.offsets).toEqual({ pfnFlags: 0, index: 8 });
    const pfnFlags = packPfnFlags(0xabcde, MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE);
    expect(pfnFlags).toBe(0xabcden | (3n << 52n));
    const bytes = memfdLuoFolioSer.encode({ pfnFlags, index: 512n });
    expect(view(bytes).getBigUint64(0, true)).toBe(pfnFlags);
    expect(view(bytes).getBigUint64(8, true)).toBe(512n);
    expect(unpackPfnFlags(memfdLuoFolioSer.decode(bytes).pfnFlags)).toEqual({
      pfn: 0xabcde,
      flags: 3,
    });
  });

  it('keeps the widest pfn and flags apart, and refuses wider ones', () => {
    const widest = packPfnFlags(2 ** 52 - 1, 0xfff);
    expect(widest).toBe(0xffff_ffff_ffff_ffffn);
    expect(unpackPfnFlags(widest)).toEqual({ pfn: 2 ** 52 - 1, flags: 0xfff });
    expect(() => packPfnFlags(2 ** 52, 0)).toThrow(RangeError);
    expect(() => packPfnFlags(-1, 0)).toThrow(RangeError);
    expect(() => packPfnFlags(1, 0x1000)).toThrow(RangeError);
  });

  it('lays out memfd-v3 struct memfd_luo_ser in 56 bytes as documented, kho_vmalloc nested at 32, runs_crc at 48', () => {
    expect(memfdLuoSerV3.size).toBe(56);
    expect(memfdLuoSerV3.offsets).toEqual({
      pos: 0,
      size: 8,
      seals: 16,
      flags: 20,
      nrRuns: 24,
      runs: 32,
      runsCrc: 48,
      reserved: 52,
    });
    const value = {
      pos: 9n,
      size: 0x4000_0000n,
      seals: 0x5,
      flags: 0,
      nrRuns: 3n,
      runs: { first: 0x30_0000n, totalPages: 1, flags: 1, order: 0 },
      runsCrc: 0xe3069283,
      reserved: 0,
    };
    const bytes = memfdLuoSerV3.encode(value);
    const v = view(bytes);
    expect(v.getBigUint64(0, true)).toBe(9n);
    expect(v.getBigUint64(8, true)).toBe(0x4000_0000n);
    expect(v.getUint32(16, true)).toBe(0x5);
    expect(v.getUint32(20, true)).toBe(0);
    expect(v.getBigUint64(24, true)).toBe(3n);
    expect(v.getBigUint64(32, true)).toBe(0x30_0000n);
    expect(v.getUint32(40, true)).toBe(1);
    expect(v.getUint16(44, true)).toBe(1);
    expect(v.getUint16(46, true)).toBe(0);
    expect(v.getUint32(48, true)).toBe(0xe3069283);
    expect(v.getUint32(52, true)).toBe(0);
    expect(memfdLuoSerV3.decode(bytes)).toEqual(value);
  });

  it('lays out struct memfd_luo_run_ser in 24 bytes: pfn, index, nr_folios, order, flags', () => {
    expect(memfdLuoRunSer.size).toBe(24);
    expect(memfdLuoRunSer.offsets).toEqual({
      pfn: 0,
      index: 8,
      nrFolios: 16,
      order: 20,
      flags: 22,
    });
    const value = { pfn: 0xabc00n, index: 1024n, nrFolios: 512, order: 9, flags: 3 };
    const bytes = memfdLuoRunSer.encode(value);
    const v = view(bytes);
    expect(v.getBigUint64(0, true)).toBe(0xabc00n);
    expect(v.getBigUint64(8, true)).toBe(1024n);
    expect(v.getUint32(16, true)).toBe(512);
    expect(v.getUint16(20, true)).toBe(9);
    expect(v.getUint16(22, true)).toBe(3);
    expect(memfdLuoRunSer.decode(bytes)).toEqual(value);
  });
});
