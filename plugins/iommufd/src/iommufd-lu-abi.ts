/**
 * What `iommufd-v1` hands over (`include/linux/kho/abi/iommufd.h` of the upstream series, with
 * the domain named by what this machine's IOMMU driver restores it by). One KHO-preserved folio at
 * the file's `serializedData`: an {@link iommufdLu} header, then `nr_hwpts` {@link iommufdHwptLu}
 * entries. Little-endian. Change {@link IOMMUFD_LUO_COMPATIBLE} whenever this layout changes.
 */
import { defineStruct, u32, u64 } from '@liveupdate/core';

/** `IOMMUFD_LUO_COMPATIBLE`: the iommufd file handler's compatible string. */
export const IOMMUFD_LUO_COMPATIBLE = 'iommufd-v1';

/** `struct iommufd_lu` (8 bytes): `nr_hwpts` u32 @0, `__reserved` u32 @4 (0); entries follow. */
export const iommufdLu = defineStruct('iommufd_lu', [
  ['nr_hwpts', u32],
  ['__reserved', u32],
] as const);

/**
 * `struct iommufd_hwpt_lu` (24 bytes), one per marked HWPT: `token` u32 @0 (userspace's
 * `hwpt_token`), `reclaimed` u32 @4 (0, set to 1 by the new kernel once `IOMMU_HWPT_LU_RESTORE`
 * took it), `domain_id` u32 @8 and `__reserved` u32 @12 (0), `page_table_root` u64 @16: the
 * domain id and top-level table the IOMMU driver restores the domain with (upstream:
 * `domain_data`, the address of the domain's record in the IOMMU FLB).
 */
export const iommufdHwptLu = defineStruct('iommufd_hwpt_lu', [
  ['token', u32],
  ['reclaimed', u32],
  ['domain_id', u32],
  ['__reserved', u32],
  ['page_table_root', u64],
] as const);

/** The bytes an `iommufd_lu` with `nrHwpts` entries takes. */
export function iommufdLuSize(nrHwpts: number): number {
  return iommufdLu.size + nrHwpts * iommufdHwptLu.size;
}

/** `struct iommu_lu_flb_ser` (8 bytes), the IOMMU FLB's data: `version` u32 @0, `__reserved` u32 @4. */
export const iommuLuFlbSer = defineStruct('iommu_lu_flb_ser', [
  ['version', u32],
  ['__reserved', u32],
] as const);

/** `IOMMU_LUO_FLB_COMPATIBLE`: the IOMMU FLB's compatible string (version 1 of its data). */
export const IOMMU_FLB_COMPATIBLE = 'iommu-liveupdate-v1';

/** The only version of {@link iommuLuFlbSer} this kernel writes and reads. */
export const IOMMU_LU_FLB_VERSION = 1;
