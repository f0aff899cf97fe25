import { KernelError, type File, type IommuDomain, type PciDevice } from '@liveupdate/kernel';
import type { IommufdContext } from './iommufd-context.js';
import type { IommufdHwptPaging } from './iommufd-hwpt-paging.js';

/**
 * A PCI device bound to an iommufd (what `iommufdDeviceBind` returns): the kernel side of a vfio
 * device cdev bound with `VFIO_DEVICE_BIND_IOMMUFD`. The binding holds a reference on the iommufd
 * file until {@link IommufdBoundDevice.unbind}.
 */
export interface IommufdBoundDevice {
  /** The device object's id (vfio returns it as `out_devid`). */
  readonly devId: number;
  /** The HWPT the device is attached to, if any. */
  readonly hwptId: number | undefined;
  /** The iommufd file the device is bound to (the binding holds a reference on it). */
  readonly iommufdFile: File;
  /**
   * The attached HWPT's live-update token and domain when that HWPT is marked for preservation
   * (`IOMMU_HWPT_LU_SET_PRESERVE`); `undefined` otherwise (not attached, not marked, or a restored
   * HWPT). What vfio-pci-v1 preserves the device on.
   */
  preservedHwpt(): { token: number; domain: IommuDomain } | undefined;
  /**
   * `iommufd_device_attach()`/`_replace()`: attach to an IOAS (auto domain) or a paging HWPT by
   * id; when already attached, replace hitlessly. Returns the HWPT id now in use. `ENOENT` for an
   * unknown id, `EINVAL` for an id that is neither an IOAS nor a paging HWPT, `ENODEV` after
   * {@link IommufdBoundDevice.unbind}; a failure leaves the device where it was.
   *
   * After a live update, a device the IOMMU still translates through a restored domain is moved
   * with the driver's hitless replace, never detached first: it may be doing DMA. Once the
   * domain's HWPT is restored (`IOMMU_HWPT_LU_RESTORE`) the device counts as attached to it.
   */
  attach(ptId: number): number;
  /** `iommufd_device_detach()`; a no-op when not attached. The device's DMA faults from then on. */
  detach(): void;
  /**
   * `iommufd_device_unbind()`: detach, remove the device object, release DMA ownership, drop the
   * file reference (the last one releases the iommufd). A second call does nothing.
   */
  unbind(): Promise<void>;
}

/** Devices bound to some iommufd (`iommu_device_claim_dma_owner_user()`): one owner each. */
const dmaOwned = new WeakSet<PciDevice>();

/**
 * `struct iommufd_device` (`IOMMUFD_OBJ_DEVICE`): a device object of an iommufd. Its owner (vfio)
 * holds it, so `IOMMU_DESTROY` of it is `EBUSY`; it goes with {@link IommufdDeviceObject.unbind}.
 */
export class IommufdDeviceObject implements IommufdBoundDevice {
  /** `IOMMUFD_OBJ_DEVICE`. */
  readonly type = 'device';
  /** The object id in its iommufd. */
  readonly id: number;
  readonly devId: number;
  /** The PCI device. */
  readonly device: PciDevice;
  readonly #ictx: IommufdContext;
  readonly iommufdFile: File;
  #hwpt: IommufdHwptPaging | undefined;
  #bound = true;

  /**
   * Claim DMA ownership of `device` (`EBUSY` when an iommufd already owns it). The caller holds a
   * reference on `file` for the object, which {@link IommufdDeviceObject.unbind} drops.
   */
  constructor(id: number, ictx: IommufdContext, file: File, device: PciDevice) {
    if (dmaOwned.has(device)) {
      throw new KernelError('EBUSY', `iommufd: ${device.name} is already bound to an iommufd`);
    }
    dmaOwned.add(device);
    this.id = id;
    this.devId = id;
    this.device = device;
    this.#ictx = ictx;
    this.iommufdFile = file;
  }

  get hwptId(): number | undefined {
    return this.#hwpt?.id;
  }

  preservedHwpt(): { token: number; domain: IommuDomain } | undefined {
    const hwpt = this.#hwpt;
    if (!hwpt || hwpt.restored || hwpt.luToken === undefined) return undefined;
    return { token: hwpt.luToken, domain: hwpt.domain };
  }

  /**
   * The device is attached to `hwpt`, a restored HWPT, if the IOMMU translates it through that
   * HWPT's domain and it is attached to nothing else here.
   */
  adoptRestored(hwpt: IommufdHwptPaging): void {
    if (!this.#bound || this.#hwpt) return;
    if (this.#ictx.kernel.iommu.domainOf(this.device.bdf)?.id !== hwpt.domain.id) return;
    hwpt.devices.add(this.devId);
    this.#hwpt = hwpt;
  }

  attach(ptId: number): number {
    if (!this.#bound) throw new KernelError('ENODEV', `iommufd: ${this.device.name} is unbound`);
    const target = this.#ictx.getObject(ptId);
    let hwpt: IommufdHwptPaging;
    let created = false;
    if (target.type === 'ioas') {
      const auto = this.#ictx.autoHwptOf(target);
      hwpt = auto ?? this.#ictx.allocHwptPaging(target, true);
      created = auto === undefined;
    } else if (target.type === 'hwpt_paging') {
      hwpt = target;
    } else {
      throw new KernelError('EINVAL', `iommufd: object ${ptId} is neither an IOAS nor a HWPT`);
    }
    const old = this.#hwpt;
    if (hwpt === old) return hwpt.id;
    const { iommu } = this.#ictx.kernel;
    try {
      // A device left on a restored domain without its HWPT is moved hitlessly as well.
      if (old || iommu.domainOf(this.device.bdf)) iommu.replaceDevice(hwpt.domain, this.device.bdf);
      else iommu.attachDevice(hwpt.domain, this.device.bdf);
    } catch (error) {
      if (created) this.#ictx.destroyHwpt(hwpt);
      throw error;
    }
    hwpt.devices.add(this.devId);
    this.#hwpt = hwpt;
    if (old) this.#leave(old);
    return hwpt.id;
  }

  detach(): void {
    const old = this.#hwpt;
    if (!old) return;
    this.#ictx.kernel.iommu.detachDevice(this.device.bdf);
    this.#hwpt = undefined;
    this.#leave(old);
  }

  async unbind(): Promise<void> {
    if (!this.#bound) return;
    this.detach();
    this.#bound = false;
    this.#ictx.removeDevice(this);
    dmaOwned.delete(this.device);
    await this.#ictx.kernel.vfs.fput(this.iommufdFile);
  }

  /** The device is no longer on `hwpt`; an auto domain goes with its last device. */
  #leave(hwpt: IommufdHwptPaging): void {
    hwpt.devices.delete(this.devId);
    if (hwpt.autoDomain && hwpt.devices.size === 0 && !this.#ictx.isLuPreserved(hwpt)) {
      this.#ictx.destroyHwpt(hwpt);
    }
  }
}
