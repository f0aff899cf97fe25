import { KernelError, type File, type IommuDomain, type PciDevice } from '@liveupdate/kernel';
import { IommufdDeviceObject } from './iommufd-device-object.js';
import { IommufdHwptPaging } from './iommufd-hwpt-paging.js';
import { IommufdIoas, type IoasKernel } from './iommufd-ioas.js';

/**
 * The live-update state of an iommufd retrieved from a LUO session (upstream `ictx->lu`): the
 * preserved HWPTs by token, which `IOMMU_HWPT_LU_RESTORE` reclaims one at a time.
 */
export interface IommufdLuIncoming {
  /**
   * Reclaim the HWPT preserved under `token`: record it reclaimed in the handed-over data and
   * return its restored domain. `ENOENT` for a token that was not preserved, or was reclaimed
   * already, or once the session finished.
   */
  reclaim(token: number): IommuDomain;
  /** Whether a HWPT this iommufd preserved was on restored domain `domainId`. */
  namesDomain(domainId: number): boolean;
}

/**
 * Domain ids of the restored domains a restored HWPT wraps, per IOMMU driver (one per kernel):
 * what the IOMMU FLB's `finish` must leave alone.
 */
const restoredHwptDomains = new WeakMap<object, Set<number>>();

/** The ids of the restored domains that restored HWPTs of any iommufd of this kernel wrap. */
export function restoredDomainsInUse(iommu: object): ReadonlySet<number> {
  return restoredHwptDomains.get(iommu) ?? new Set();
}

/** An object of an iommufd; `type` tells which (`enum iommufd_object_type`). */
export type IommufdObject = IommufdIoas | IommufdHwptPaging | IommufdDeviceObject;

/**
 * `struct iommufd_ctx`: what one open of `/dev/iommu` owns, its objects by id. Ids start at 1 and
 * the lowest free one is reused, as the kernel's `xa_alloc` into an `XA_FLAGS_ALLOC1` xarray does.
 * Objects are IOASes, paging HWPTs (each owning an IOMMU domain that follows its IOAS) and device
 * objects (bound by vfio through `iommufdDeviceBind`).
 */
export class IommufdContext {
  /** The kernel services the objects use. */
  readonly kernel: IoasKernel;
  readonly #objects = new Map<number, IommufdObject>();
  /**
   * Preserved in a LUO session by `iommufd-v1` (until it is unpreserved): marking HWPTs is
   * `EBUSY`, marked HWPTs cannot be destroyed, their IOASes are immutable.
   */
  luPreserved = false;
  /** Set when this iommufd was retrieved from a LUO session: what `IOMMU_HWPT_LU_RESTORE` uses. */
  lu: IommufdLuIncoming | undefined;

  constructor(kernel: IoasKernel) {
    this.kernel = kernel;
  }

  /** The paging HWPTs marked with `IOMMU_HWPT_LU_SET_PRESERVE`, in id order. */
  get markedHwpts(): IommufdHwptPaging[] {
    return this.objects.filter(
      (object): object is IommufdHwptPaging =>
        object.type === 'hwpt_paging' && !object.restored && object.luToken !== undefined,
    );
  }

  /**
   * `IOMMU_HWPT_LU_SET_PRESERVE`: mark the paging HWPT `hwptId` to be preserved under `token`
   * (marking it again moves it to the new token). `EBUSY` once this iommufd is preserved,
   * `ENOENT` for an unknown id, `EINVAL` for an object that is not a paging HWPT of an IOAS (a
   * restored HWPT cannot be preserved again), `EADDRINUSE` when another HWPT has the token.
   */
  setHwptLuPreserve(hwptId: number, token: number): void {
    if (this.luPreserved) {
      throw new KernelError('EBUSY', 'iommufd: preserved for live update; HWPT marks are fixed');
    }
    const hwpt = this.getObject(hwptId);
    if (hwpt.type !== 'hwpt_paging' || hwpt.restored) {
      throw new KernelError('EINVAL', `iommufd: object ${hwptId} is not a paging HWPT`);
    }
    const other = this.markedHwpts.find((h) => h.luToken === token && h !== hwpt);
    if (other) {
      throw new KernelError('EADDRINUSE', `iommufd: token ${token} already marks HWPT ${other.id}`);
    }
    hwpt.luToken = token;
  }

  /**
   * `IOMMU_HWPT_LU_RESTORE`: a HWPT around the restored domain preserved under `token`. `EINVAL`
   * when this iommufd was not retrieved from a session; `ENOENT` for an unknown or reclaimed
   * token. Bound devices the IOMMU translates through that domain count as attached to it.
   */
  restoreHwpt(token: number): IommufdHwptPaging {
    if (!this.lu) {
      throw new KernelError('EINVAL', 'iommufd: not retrieved from a live-update session');
    }
    const domain = this.lu.reclaim(token);
    const hwpt = new IommufdHwptPaging(this.#nextId(), undefined, domain, false, token);
    this.#objects.set(hwpt.id, hwpt);
    let inUse = restoredHwptDomains.get(this.kernel.iommu);
    if (!inUse) restoredHwptDomains.set(this.kernel.iommu, (inUse = new Set()));
    inUse.add(domain.id);
    for (const object of this.#objects.values()) {
      if (object.type === 'device') object.adoptRestored(hwpt);
    }
    return hwpt;
  }

  /** The restored HWPT of this iommufd on `domain`, if there is one. */
  restoredHwptOn(domain: IommuDomain): IommufdHwptPaging | undefined {
    for (const object of this.#objects.values()) {
      if (object.type === 'hwpt_paging' && object.restored && object.domain.id === domain.id) {
        return object;
      }
    }
    return undefined;
  }

  /** The objects, in id order. */
  get objects(): IommufdObject[] {
    return [...this.#objects.values()].sort((a, b) => a.id - b.id);
  }

  /** `iommufd_ioas_alloc()`: a new, empty IOAS. */
  allocIoas(): IommufdIoas {
    const ioas = new IommufdIoas(this.#nextId(), this.kernel);
    this.#objects.set(ioas.id, ioas);
    return ioas;
  }

  /**
   * `iommufd_hwpt_paging_alloc()`: a paging HWPT on `ioas` with a new IOMMU domain that maps
   * every area of the IOAS. All or nothing: on failure the domain is freed.
   */
  allocHwptPaging(ioas: IommufdIoas, autoDomain: boolean): IommufdHwptPaging {
    const { iommu } = this.kernel;
    const domain = iommu.allocDomain();
    try {
      ioas.addDomain(domain);
    } catch (error) {
      iommu.freeDomain(domain);
      throw error;
    }
    const hwpt = new IommufdHwptPaging(this.#nextId(), ioas, domain, autoDomain);
    this.#objects.set(hwpt.id, hwpt);
    return hwpt;
  }

  /**
   * The auto domain of `ioas` a device attaching to it joins (`iommufd_device_auto_get_domain()`
   * reuses one before it allocates another), if there is one.
   */
  autoHwptOf(ioas: IommufdIoas): IommufdHwptPaging | undefined {
    for (const object of this.#objects.values()) {
      if (object.type === 'hwpt_paging' && object.autoDomain && object.ioas === ioas) return object;
    }
    return undefined;
  }

  /**
   * `iommufd_device_bind()` after the caller took a reference on `file` (this context's file):
   * a new device object for `device`. `EBUSY` when an iommufd already owns the device.
   */
  addDevice(file: File, device: PciDevice): IommufdDeviceObject {
    const object = new IommufdDeviceObject(this.#nextId(), this, file, device);
    this.#objects.set(object.devId, object);
    const domain = this.kernel.iommu.domainOf(device.bdf);
    const restored = domain && this.restoredHwptOn(domain);
    if (restored) object.adoptRestored(restored);
    return object;
  }

  /** Forget the device object `object` (its unbind). */
  removeDevice(object: IommufdDeviceObject): void {
    if (this.#objects.get(object.devId) === object) this.#objects.delete(object.devId);
  }

  /** `iommufd_get_object(IOMMUFD_OBJ_ANY)`: the object with `id`, else `ENOENT`. */
  getObject(id: number): IommufdObject {
    const object = this.#objects.get(id);
    if (!object) throw new KernelError('ENOENT', `iommufd: no object with id ${id}`);
    return object;
  }

  /** `iommufd_get_ioas()`: the IOAS with `id`; `ENOENT` when there is none or it is no IOAS. */
  getIoas(id: number): IommufdIoas {
    const object = this.#objects.get(id);
    if (object?.type !== 'ioas') throw new KernelError('ENOENT', `iommufd: no IOAS with id ${id}`);
    return object;
  }

  /**
   * `iommufd_get_device()`: the device object with `id`; `ENOENT` when there is none or it is not
   * a device (`iommufd_get_object()` does not tell a wrong type from a missing id).
   */
  getDevice(id: number): IommufdDeviceObject {
    const object = this.#objects.get(id);
    if (object?.type !== 'device') {
      throw new KernelError('ENOENT', `iommufd: no device object with id ${id}`);
    }
    return object;
  }

  /**
   * Destroy a HWPT that no device uses: stop its IOAS updating the domain, unmap and free it.
   * The IOAS loses a user. A restored HWPT frees its restored domain (`EBUSY`, and it stays, while
   * the IOMMU still translates a device through it). `EBUSY` for a HWPT preserved for a live
   * update.
   */
  destroyHwpt(hwpt: IommufdHwptPaging): void {
    if (this.isLuPreserved(hwpt)) {
      throw new KernelError('EBUSY', `iommufd: HWPT ${hwpt.id} is preserved for live update`);
    }
    if (!hwpt.ioas) {
      this.kernel.iommu.freeDomain(hwpt.domain);
      this.#objects.delete(hwpt.id);
      restoredHwptDomains.get(this.kernel.iommu)?.delete(hwpt.domain.id);
      return;
    }
    this.#objects.delete(hwpt.id);
    hwpt.ioas.removeDomain(hwpt.domain);
    this.kernel.iommu.freeDomain(hwpt.domain);
  }

  /** Whether `hwpt` is marked and this iommufd is preserved: its domain is preserved. */
  isLuPreserved(hwpt: IommufdHwptPaging): boolean {
    return this.luPreserved && !hwpt.restored && hwpt.luToken !== undefined;
  }

  /**
   * `iommufd_object_destroy_user()`: destroy the object `id`. `ENOENT` when there is none;
   * `EBUSY` for a device object (its owner holds it), a HWPT with attached devices, or an IOAS
   * with HWPTs. A HWPT's domain is freed; an IOAS is unmapped, its pins and file references
   * dropped.
   */
  async destroy(id: number): Promise<void> {
    const object = this.getObject(id);
    switch (object.type) {
      case 'device':
        throw new KernelError('EBUSY', `iommufd: device object ${id} is held by its driver`);
      case 'hwpt_paging':
        if (object.devices.size > 0) {
          throw new KernelError(
            'EBUSY',
            `iommufd: HWPT ${id} has ${object.devices.size} attached devices`,
          );
        }
        this.destroyHwpt(object);
        return;
      case 'ioas':
        if (object.users > 0) {
          throw new KernelError('EBUSY', `iommufd: IOAS ${id} is used by ${object.users} HWPTs`);
        }
        this.#objects.delete(id);
        await object.unmapAll();
    }
  }

  /**
   * `iommufd_fops_release()`: the file is gone; destroy every object, users before what they
   * use: devices are detached and dropped (a binding holds the file, so normally none is left),
   * then HWPTs free their domains, then each IOAS is unmapped.
   */
  async release(): Promise<void> {
    const objects = this.objects;
    for (const object of objects) {
      if (object.type === 'device') object.detach();
    }
    for (const object of objects) {
      if (object.type !== 'hwpt_paging' || !this.#objects.has(object.id)) continue;
      try {
        this.destroyHwpt(object);
      } catch (error) {
        // A restored domain a device still translates through stays for the IOMMU FLB's finish.
        if (!object.restored || !KernelError.isInstance(error) || error.code !== 'EBUSY') {
          throw error;
        }
        restoredHwptDomains.get(this.kernel.iommu)?.delete(object.domain.id);
      }
    }
    this.#objects.clear();
    for (const object of objects) {
      if (object.type === 'ioas') await object.unmapAll();
    }
  }

  /** The lowest free id, from 1. */
  #nextId(): number {
    let id = 1;
    while (this.#objects.has(id)) id++;
    return id;
  }
}
