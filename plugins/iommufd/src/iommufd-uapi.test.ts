import { describe, expect, it } from 'vitest';
import {
  IOMMUFD_CMD,
  IOMMUFD_TYPE,
  IOMMU_DESTROY,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_LU_RESTORE,
  IOMMU_HWPT_LU_SET_PRESERVE,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_UNMAP,
  iommuDestroy,
  iommuHwptAlloc,
  iommuHwptLuRestore,
  iommuHwptLuSetPreserve,
  iommuIoasAlloc,
  iommuIoasIovaRanges,
  iommuIoasMapFile,
  iommuIoasMapping,
  iommuIoasMappings,
  iommuIoasUnmap,
  iommuIovaRange,
} from './iommufd-uapi.js';

describe('the iommufd uAPI', () => {
  it('numbers its ioctls as _IO(";", nr) from IOMMUFD_CMD_BASE 0x80', () => {
    expect(IOMMUFD_TYPE).toBe(';'.charCodeAt(0));
    expect(IOMMU_DESTROY).toBe(0x3b80);
    expect(IOMMU_IOAS_ALLOC).toBe(0x3b81);
    expect(IOMMU_IOAS_IOVA_RANGES).toBe(0x3b84);
    expect(IOMMU_IOAS_UNMAP).toBe(0x3b86);
    expect(IOMMU_IOAS_MAP_FILE).toBe(0x3b8f);
    expect(IOMMUFD_CMD.HWPT_ALLOC).toBe(0x89);
    expect(IOMMU_HWPT_ALLOC).toBe(0x3b89);
  });

  it('numbers the live-update ioctls 0x95 and 0x96, as the upstream series snapshot does', () => {
    expect(IOMMU_HWPT_LU_SET_PRESERVE).toBe(0x3b95);
    expect(IOMMU_HWPT_LU_RESTORE).toBe(0x3b96);
  });

  it('lays out the live-update argument structs as the series header does', () => {
    expect(iommuHwptLuSetPreserve.offsets).toEqual({ size: 0, hwpt_id: 4, hwpt_token: 8 });
    expect(iommuHwptLuSetPreserve.size).toBe(12);
    expect(iommuHwptLuRestore.offsets).toEqual({
      size: 0,
      hwpt_token: 4,
      hwpt_alloc_flags: 8,
      out_pt_id: 12,
    });
    expect(iommuHwptLuRestore.size).toBe(16);
  });

  it('lays out the argument structs as the kernel header does', () => {
    expect(iommuDestroy.size).toBe(8);
    expect(iommuIoasAlloc.offsets).toEqual({ size: 0, flags: 4, out_ioas_id: 8 });
    expect(iommuIovaRange.size).toBe(16);
    expect(iommuIoasIovaRanges.offsets).toEqual({
      size: 0,
      ioas_id: 4,
      num_iovas: 8,
      __reserved: 12,
      allowed_iovas: 16,
      out_iova_alignment: 24,
    });
    expect(iommuIoasMapFile.offsets).toEqual({
      size: 0,
      flags: 4,
      ioas_id: 8,
      fd: 12,
      start: 16,
      length: 24,
      iova: 32,
    });
    expect(iommuIoasMapFile.size).toBe(40);
    expect(iommuIoasUnmap.offsets).toEqual({ size: 0, ioas_id: 4, iova: 8, length: 16 });
    expect(iommuIoasUnmap.size).toBe(24);
  });
});

it('round-trips an iommu_ioas_map_file, little-endian at the documented offsets', () => {
  const value = {
    size: 40,
    flags: 7,
    ioas_id: 3,
    fd: -1,
    start: 0x1000n,
    length: 0x20_0000n,
    iova: 0xffff_ffff_f000n,
  };
  const bytes = iommuIoasMapFile.encode(value);
  const view = new DataView(bytes.buffer);
  expect(view.getUint32(0, true)).toBe(40);
  expect(view.getInt32(12, true)).toBe(-1);
  expect(view.getBigUint64(32, true)).toBe(0xffff_ffff_f000n);
  expect(iommuIoasMapFile.decode(bytes)).toEqual(value);
});

it('lays out the non-upstream mapping list like the IOVA ranges query', () => {
  expect(iommuIoasMappings.offsets).toEqual({
    size: 0,
    ioas_id: 4,
    num_mappings: 8,
    __reserved: 12,
    mappings: 16,
  });
  expect(iommuIoasMapping.offsets).toEqual({
    iova: 0,
    length: 8,
    start: 16,
    flags: 24,
    __reserved: 28,
  });
  expect(iommuIoasMapping.size).toBe(32);
});

it('lays out iommu_hwpt_alloc in 48 bytes as the kernel header does', () => {
  expect(iommuHwptAlloc.size).toBe(48);
  expect(iommuHwptAlloc.offsets).toEqual({
    size: 0,
    flags: 4,
    dev_id: 8,
    pt_id: 12,
    out_hwpt_id: 16,
    __reserved: 20,
    data_type: 24,
    data_len: 28,
    data_uptr: 32,
    fault_id: 40,
    __reserved2: 44,
  });
  const bytes = iommuHwptAlloc.encode({
    size: 48,
    flags: 0,
    dev_id: 2,
    pt_id: 1,
    out_hwpt_id: 0,
    __reserved: 0,
    data_type: 0,
    data_len: 0,
    data_uptr: 0x1_0000_0000n,
    fault_id: 9,
    __reserved2: 0,
  });
  const view = new DataView(bytes.buffer);
  expect(view.getUint32(8, true)).toBe(2);
  expect(view.getUint32(36, true)).toBe(1);
  expect(view.getUint32(40, true)).toBe(9);
});
