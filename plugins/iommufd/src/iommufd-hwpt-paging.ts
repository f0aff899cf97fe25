import type { IommuDomain } from '@liveupdate/kernel';
import type { IommufdIoas } from './iommufd-ioas.js';

/**
 * `struct iommufd_hwpt_paging` (`IOMMUFD_OBJ_HWPT_PAGING`): a hardware page table, an IOMMU
 * domain that maps exactly what its IOAS maps. Made by `IOMMU_HWPT_ALLOC`, or automatically when
 * a device attaches to an IOAS (an "auto domain", destroyed when its last device leaves). It is a
 * user of its IOAS until it is destroyed; devices attached to it keep it from being destroyed.
 *
 * After a live update, `IOMMU_HWPT_LU_RESTORE` makes a HWPT around a domain the previous kernel
 * preserved: it has no IOAS, its mappings are immutable, and destroying it frees the domain.
 */
export class IommufdHwptPaging {
  /** `IOMMUFD_OBJ_HWPT_PAGING`. */
  readonly type = 'hwpt_paging';
  /** The object id in its iommufd. */
  readonly id: number;
  /** The IOAS whose mappings the domain follows; `undefined` for a restored HWPT. */
  readonly ioas: IommufdIoas | undefined;
  /** The IOMMU domain this HWPT owns. */
  readonly domain: IommuDomain;
  /** Made by an attach to the IOAS, not by `IOMMU_HWPT_ALLOC`. */
  readonly autoDomain: boolean;
  /** Ids of the device objects attached to it. */
  readonly devices = new Set<number>();
  /**
   * The token `IOMMU_HWPT_LU_SET_PRESERVE` marked it with (preserved with its iommufd), or the
   * token it was restored from (`IOMMU_HWPT_LU_RESTORE`); `undefined` when neither.
   */
  luToken: number | undefined;

  constructor(
    id: number,
    ioas: IommufdIoas | undefined,
    domain: IommuDomain,
    autoDomain: boolean,
    luToken?: number,
  ) {
    this.id = id;
    this.ioas = ioas;
    this.domain = domain;
    this.autoDomain = autoDomain;
    this.luToken = luToken;
  }

  /** Made by `IOMMU_HWPT_LU_RESTORE` around a domain restored from the previous kernel. */
  get restored(): boolean {
    return this.ioas === undefined;
  }
}
