import { O_RDWR, type Process } from '@liveupdate/machine';
import type { StructCodec } from '@liveupdate/core';
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_IRQ_SET_MINSZ,
  VFIO_PCI_BAR0_REGION_INDEX,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_OFFSET_SHIFT,
  vfioDeviceAttachIommufdPt,
  vfioDeviceBindIommufd,
  vfioDeviceDetachIommufdPt,
  vfioDeviceInfo,
  vfioIrqInfo,
  vfioIrqSet,
  vfioRegionInfo,
} from './vfio-uapi.js';

/** A region of a vfio device, as {@link VfioDevice.regionInfo} describes it. */
export interface VfioRegionInfo {
  readonly flags: number;
  /** Bytes; 0 for a region the device does not have. */
  readonly size: number;
  /** Where the region starts in the device file. */
  readonly offset: number;
}

/** An interrupt index of a vfio device, as {@link VfioDevice.irqInfo} describes it. */
export interface VfioIrqInfo {
  readonly flags: number;
  /** Number of vectors. */
  readonly count: number;
}

const BAR0 = VFIO_PCI_BAR0_REGION_INDEX * 2 ** VFIO_PCI_OFFSET_SHIFT;
const CONFIG = VFIO_PCI_CONFIG_REGION_INDEX * 2 ** VFIO_PCI_OFFSET_SHIFT;

/**
 * A vfio device cdev (`/dev/vfio/devices/vfioN`) opened by a process: a typed client over the vfio
 * device ioctls and region accesses. Each method is one syscall; a failure rejects with the
 * kernel's `KernelError`, errno unchanged.
 *
 * @example
 * ```ts
 * const iommufd = await IommufdDevice.open(vmm);
 * const ioas = await iommufd.allocIoas();
 * const nic = await VfioDevice.open(vmm, '/dev/vfio/devices/vfio0');
 * await nic.bindIommufd(iommufd.fd);
 * await nic.attach(ioas);
 * await nic.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
 * await nic.writeRegister(NIC_REG_CTRL, NIC_CTRL_RX_ENABLE);
 * ```
 */
export class VfioDevice {
  readonly process: Process;
  /** The cdev's fd. */
  readonly fd: number;

  private constructor(process: Process, fd: number) {
    this.process = process;
    this.fd = fd;
  }

  /** Open a device cdev; the first open of a device resets it. */
  static async open(process: Process, path: string): Promise<VfioDevice> {
    return new VfioDevice(process, await process.open(path, O_RDWR));
  }

  /**
   * A client over a device fd the process already has, e.g. one `LIVEUPDATE_SESSION_RETRIEVE_FD`
   * returned after a live update (such a file is not reset; it still needs
   * {@link VfioDevice.bindIommufd}).
   */
  static fromFd(process: Process, fd: number): VfioDevice {
    return new VfioDevice(process, fd);
  }

  /** `VFIO_DEVICE_BIND_IOMMUFD`: the device's object id in the iommufd. */
  async bindIommufd(iommufdFd: number): Promise<number> {
    const arg = await this.#ioctl(VFIO_DEVICE_BIND_IOMMUFD, vfioDeviceBindIommufd, {
      flags: 0,
      iommufd: iommufdFd,
      out_devid: 0,
    });
    return vfioDeviceBindIommufd.decode(arg).out_devid;
  }

  /** `VFIO_DEVICE_ATTACH_IOMMUFD_PT` to an IOAS or HWPT id (a replace when attached): the HWPT id. */
  async attach(ptId: number): Promise<number> {
    const arg = await this.#ioctl(VFIO_DEVICE_ATTACH_IOMMUFD_PT, vfioDeviceAttachIommufdPt, {
      flags: 0,
      pt_id: ptId,
      pasid: 0,
    });
    return vfioDeviceAttachIommufdPt.decode(arg).pt_id;
  }

  /** `VFIO_DEVICE_DETACH_IOMMUFD_PT`. */
  async detach(): Promise<void> {
    await this.#ioctl(VFIO_DEVICE_DETACH_IOMMUFD_PT, vfioDeviceDetachIommufdPt, {
      flags: 0,
      pasid: 0,
    });
  }

  /** `VFIO_DEVICE_GET_INFO`. */
  async info(): Promise<{ flags: number; numRegions: number; numIrqs: number }> {
    const arg = await this.#ioctl(VFIO_DEVICE_GET_INFO, vfioDeviceInfo, {
      flags: 0,
      num_regions: 0,
      num_irqs: 0,
      cap_offset: 0,
      pad: 0,
    });
    const info = vfioDeviceInfo.decode(arg);
    return { flags: info.flags, numRegions: info.num_regions, numIrqs: info.num_irqs };
  }

  /** `VFIO_DEVICE_GET_REGION_INFO`. */
  async regionInfo(index: number): Promise<VfioRegionInfo> {
    const arg = await this.#ioctl(VFIO_DEVICE_GET_REGION_INFO, vfioRegionInfo, {
      flags: 0,
      index,
      cap_offset: 0,
      size: 0n,
      offset: 0n,
    });
    const info = vfioRegionInfo.decode(arg);
    return { flags: info.flags, size: Number(info.size), offset: Number(info.offset) };
  }

  /** `VFIO_DEVICE_GET_IRQ_INFO`. */
  async irqInfo(index: number): Promise<VfioIrqInfo> {
    const arg = await this.#ioctl(VFIO_DEVICE_GET_IRQ_INFO, vfioIrqInfo, {
      flags: 0,
      index,
      count: 0,
    });
    const info = vfioIrqInfo.decode(arg);
    return { flags: info.flags, count: info.count };
  }

  /** `VFIO_DEVICE_RESET`. */
  async reset(): Promise<void> {
    await this.process.ioctl(this.fd, VFIO_DEVICE_RESET);
  }

  /** Read a BAR0 register (a 4-byte `pread` of region 0). */
  async readRegister(offset: number): Promise<number> {
    const bytes = await this.process.pread(this.fd, 4, BAR0 + offset);
    return new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
  }

  /** Write a BAR0 register. */
  async writeRegister(offset: number, value: number): Promise<void> {
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setUint32(0, value >>> 0, true);
    await this.process.pwrite(this.fd, bytes, BAR0 + offset);
  }

  /** Read a 16-bit config space field. */
  async readConfig16(offset: number): Promise<number> {
    const bytes = await this.process.pread(this.fd, 2, CONFIG + offset);
    return bytes[0]! | (bytes[1]! << 8);
  }

  /** Write a 16-bit config space field. */
  async writeConfig16(offset: number, value: number): Promise<void> {
    await this.process.pwrite(
      this.fd,
      new Uint8Array([value & 0xff, (value >> 8) & 0xff]),
      CONFIG + offset,
    );
  }

  /**
   * `VFIO_DEVICE_SET_IRQS` on MSI-X vector 0 with `DATA_EVENTFD | ACTION_TRIGGER`: interrupts of
   * the device signal `eventfd` (an fd from `process.eventfd()`); `-1` unassigns it.
   */
  async setMsixEventfd(eventfd: number): Promise<void> {
    const arg = new Uint8Array(VFIO_IRQ_SET_MINSZ + 4);
    vfioIrqSet.encodeInto(arg, 0, {
      argsz: arg.length,
      flags: VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
      index: VFIO_PCI_MSIX_IRQ_INDEX,
      start: 0,
      count: 1,
    });
    new DataView(arg.buffer).setInt32(VFIO_IRQ_SET_MINSZ, eventfd, true);
    await this.process.ioctl(this.fd, VFIO_DEVICE_SET_IRQS, arg);
  }

  /** `VFIO_DEVICE_SET_IRQS` with `DATA_NONE | ACTION_TRIGGER` and `count` 0: interrupts off. */
  async disableInterrupts(): Promise<void> {
    await this.#ioctl(VFIO_DEVICE_SET_IRQS, vfioIrqSet, {
      flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER,
      index: VFIO_PCI_MSIX_IRQ_INDEX,
      start: 0,
      count: 0,
    });
  }

  /** Close the fd; the last close of the bound file resets the device and unbinds it. */
  async close(): Promise<void> {
    await this.process.close(this.fd);
  }

  async #ioctl<T extends { argsz: number }>(
    cmd: number,
    codec: StructCodec<T>,
    value: Omit<T, 'argsz'>,
  ): Promise<Uint8Array> {
    const arg = codec.encode({ ...value, argsz: codec.size } as T);
    await this.process.ioctl(this.fd, cmd, arg);
    return arg;
  }
}
