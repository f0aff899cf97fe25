/**
 * The iommufd uAPI (`include/uapi/linux/iommufd.h`): ioctl numbers and argument structs. Every
 * argument starts with a `__u32 size`; the kernel accepts a larger struct whose extra bytes are
 * zero (`E2BIG` otherwise) and refuses a smaller one (`EINVAL`).
 *
 * User pointers: the simulated process has no address space to point into, so a pointer field
 * (`allowed_iovas`, `mappings`) holds a byte offset into the same argument buffer, past the
 * struct, where the array is read or written (`EFAULT` when it does not fit).
 */
import { _IO, defineStruct, s32, u32, u64 } from '@liveupdate/core';

/** The ioctl type byte of iommufd (`';'`). */
export const IOMMUFD_TYPE = 0x3b;

/** `IOMMUFD_CMD_*`: the command numbers (`nr`) of `/dev/iommu`. */
export const IOMMUFD_CMD = {
  DESTROY: 0x80,
  IOAS_ALLOC: 0x81,
  IOAS_ALLOW_IOVAS: 0x82,
  IOAS_COPY: 0x83,
  IOAS_IOVA_RANGES: 0x84,
  IOAS_MAP: 0x85,
  IOAS_UNMAP: 0x86,
  OPTION: 0x87,
  VFIO_IOAS: 0x88,
  HWPT_ALLOC: 0x89,
  GET_HW_INFO: 0x8a,
  HWPT_SET_DIRTY_TRACKING: 0x8b,
  HWPT_GET_DIRTY_BITMAP: 0x8c,
  HWPT_INVALIDATE: 0x8d,
  FAULT_QUEUE_ALLOC: 0x8e,
  IOAS_MAP_FILE: 0x8f,
  /**
   * Live update, from the upstream series' snapshot (`samikhawaja/linux`); not merged upstream,
   * so these numbers and layouts are not final there.
   */
  HWPT_LU_SET_PRESERVE: 0x95,
  /** Live update, as {@link IOMMUFD_CMD.HWPT_LU_SET_PRESERVE}: not final upstream. */
  HWPT_LU_RESTORE: 0x96,
  /**
   * Not upstream: list an IOAS's mappings (see {@link iommuIoasMappings}). Placed far from the
   * upstream numbers so that new upstream commands never collide with it.
   */
  IOAS_MAPPINGS: 0xc0,
} as const;

/** `IOMMU_DESTROY`: destroy any object by id; argument {@link iommuDestroy}. */
export const IOMMU_DESTROY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.DESTROY);
/** `IOMMU_IOAS_ALLOC`: a new IOAS; argument {@link iommuIoasAlloc}. */
export const IOMMU_IOAS_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_ALLOC);
/** `IOMMU_IOAS_IOVA_RANGES`: the IOVA ranges that may be mapped; {@link iommuIoasIovaRanges}. */
export const IOMMU_IOAS_IOVA_RANGES = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_IOVA_RANGES);
/** `IOMMU_IOAS_UNMAP`: unmap whole mappings in a range; argument {@link iommuIoasUnmap}. */
export const IOMMU_IOAS_UNMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_UNMAP);
/** `IOMMU_IOAS_MAP_FILE`: map part of a memfd; argument {@link iommuIoasMapFile}. */
export const IOMMU_IOAS_MAP_FILE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_MAP_FILE);
/** `IOMMU_HWPT_ALLOC`: a paging HWPT on an IOAS; argument {@link iommuHwptAlloc}. */
export const IOMMU_HWPT_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HWPT_ALLOC);
/**
 * `IOMMU_HWPT_LU_SET_PRESERVE`: mark a paging HWPT to be preserved, under a token, when its
 * iommufd is preserved in a LUO session; argument {@link iommuHwptLuSetPreserve}. From the
 * upstream series' snapshot: the number is not final upstream.
 */
export const IOMMU_HWPT_LU_SET_PRESERVE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HWPT_LU_SET_PRESERVE);
/**
 * `IOMMU_HWPT_LU_RESTORE`: on an iommufd retrieved from a LUO session, a HWPT wrapping the
 * restored domain of a token; argument {@link iommuHwptLuRestore}. From the upstream series'
 * snapshot: the number is not final upstream.
 */
export const IOMMU_HWPT_LU_RESTORE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.HWPT_LU_RESTORE);
/** Not upstream: list an IOAS's mappings; argument {@link iommuIoasMappings}. */
export const IOMMU_IOAS_MAPPINGS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD.IOAS_MAPPINGS);

/** `enum iommufd_ioas_map_flags`: place the mapping at the given `iova`. */
export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
/** `enum iommufd_ioas_map_flags`: DMA may write. */
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
/** `enum iommufd_ioas_map_flags`: DMA may read. */
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;

/** `enum iommu_hwpt_data_type`: no driver-specific data (a plain paging HWPT). */
export const IOMMU_HWPT_DATA_NONE = 0;

/** `U64_MAX`: with `iova = 0`, the `length` of an {@link IOMMU_IOAS_UNMAP} of everything. */
export const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** `struct iommu_destroy` (8 bytes): `size` u32 @0, `id` u32 @4 in. */
export const iommuDestroy = defineStruct('iommu_destroy', [
  ['size', u32],
  ['id', u32],
] as const);

/** `struct iommu_ioas_alloc` (12 bytes): `size` @0, `flags` u32 @4 in (0), `out_ioas_id` @8 out. */
export const iommuIoasAlloc = defineStruct('iommu_ioas_alloc', [
  ['size', u32],
  ['flags', u32],
  ['out_ioas_id', u32],
] as const);

/** `struct iommu_iova_range` (16 bytes): `start` u64 @0, `last` u64 @8 (inclusive). */
export const iommuIovaRange = defineStruct('iommu_iova_range', [
  ['start', u64],
  ['last', u64],
] as const);

/**
 * `struct iommu_ioas_iova_ranges` (32 bytes): `size` @0, `ioas_id` u32 @4 in, `num_iovas` u32 @8
 * in/out (room in, total out), `__reserved` u32 @12 (0), `allowed_iovas` u64 @16 in (offset of an
 * {@link iommuIovaRange} array in the argument buffer), `out_iova_alignment` u64 @24 out.
 */
export const iommuIoasIovaRanges = defineStruct('iommu_ioas_iova_ranges', [
  ['size', u32],
  ['ioas_id', u32],
  ['num_iovas', u32],
  ['__reserved', u32],
  ['allowed_iovas', u64],
  ['out_iova_alignment', u64],
] as const);

/**
 * `struct iommu_ioas_map_file` (40 bytes): `size` @0, `flags` u32 @4, `ioas_id` u32 @8, `fd` s32
 * @12, `start` u64 @16, `length` u64 @24, `iova` u64 @32 (in with `FIXED_IOVA`, else out).
 */
export const iommuIoasMapFile = defineStruct('iommu_ioas_map_file', [
  ['size', u32],
  ['flags', u32],
  ['ioas_id', u32],
  ['fd', s32],
  ['start', u64],
  ['length', u64],
  ['iova', u64],
] as const);

/**
 * `struct iommu_ioas_unmap` (24 bytes): `size` @0, `ioas_id` u32 @4, `iova` u64 @8, `length` u64
 * @16 (in: the range; out: the bytes unmapped).
 */
export const iommuIoasUnmap = defineStruct('iommu_ioas_unmap', [
  ['size', u32],
  ['ioas_id', u32],
  ['iova', u64],
  ['length', u64],
] as const);

/**
 * `struct iommu_hwpt_alloc` (48 bytes): `size` @0, `flags` u32 @4 (`enum iommufd_hwpt_alloc_flags`;
 * none supported here), `dev_id` u32 @8, `pt_id` u32 @12 (an IOAS), `out_hwpt_id` u32 @16 out,
 * `__reserved` u32 @20 (0), `data_type` u32 @24 (`IOMMU_HWPT_DATA_NONE`), `data_len` u32 @28,
 * `data_uptr` u64 @32, `fault_id` u32 @40, `__reserved2` u8[4] @44 (read as one u32, 0).
 */
export const iommuHwptAlloc = defineStruct('iommu_hwpt_alloc', [
  ['size', u32],
  ['flags', u32],
  ['dev_id', u32],
  ['pt_id', u32],
  ['out_hwpt_id', u32],
  ['__reserved', u32],
  ['data_type', u32],
  ['data_len', u32],
  ['data_uptr', u64],
  ['fault_id', u32],
  ['__reserved2', u32],
] as const);

/**
 * Not upstream: `struct iommu_ioas_mappings` (24 bytes), shaped like {@link iommuIoasIovaRanges}:
 * `size` @0, `ioas_id` u32 @4, `num_mappings` u32 @8 in/out (room in, total out: entries beyond
 * the room are left out), `__reserved` u32 @12 (0), `mappings` u64 @16 in (offset of an
 * {@link iommuIoasMapping} array in the argument buffer).
 */
export const iommuIoasMappings = defineStruct('iommu_ioas_mappings', [
  ['size', u32],
  ['ioas_id', u32],
  ['num_mappings', u32],
  ['__reserved', u32],
  ['mappings', u64],
] as const);

/**
 * Not upstream: `struct iommu_ioas_mapping` (32 bytes), one mapping in IOVA order: `iova` u64 @0,
 * `length` u64 @8, `start` u64 @16 (offset in the file), `flags` u32 @24 (`READABLE`/`WRITEABLE`),
 * `__reserved` u32 @28.
 */
export const iommuIoasMapping = defineStruct('iommu_ioas_mapping', [
  ['iova', u64],
  ['length', u64],
  ['start', u64],
  ['flags', u32],
  ['__reserved', u32],
] as const);

/**
 * `struct iommu_hwpt_lu_set_preserve` (12 bytes): `size` u32 @0, `hwpt_id` u32 @4 (a paging HWPT),
 * `hwpt_token` u32 @8 (unique in the iommufd; the new kernel restores the HWPT by it).
 */
export const iommuHwptLuSetPreserve = defineStruct('iommu_hwpt_lu_set_preserve', [
  ['size', u32],
  ['hwpt_id', u32],
  ['hwpt_token', u32],
] as const);

/**
 * `struct iommu_hwpt_lu_restore` (16 bytes): `size` u32 @0, `hwpt_token` u32 @4 in,
 * `hwpt_alloc_flags` u32 @8 in (0), `out_pt_id` u32 @12 out (the new HWPT's id).
 */
export const iommuHwptLuRestore = defineStruct('iommu_hwpt_lu_restore', [
  ['size', u32],
  ['hwpt_token', u32],
  ['hwpt_alloc_flags', u32],
  ['out_pt_id', u32],
] as const);
