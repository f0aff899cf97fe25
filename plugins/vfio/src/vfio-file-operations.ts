import type { StructCodec } from '@liveupdate/core';
import {
  KernelError,
  argFd,
  type File,
  type FileOperations,
  type SyscallContext,
} from '@liveupdate/kernel';
import {
  PCI_BAR_SIZE,
  PCI_COMMAND,
  PCI_COMMAND_MEMORY,
  PCI_CONFIG_SPACE_SIZE,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_MSIX_FLAGS,
  hex,
} from '@liveupdate/machine';
import type { VfioPciDevice } from './vfio-pci-device.js';
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ,
  VFIO_DEVICE_ATTACH_PASID,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_BIND_IOMMUFD_MINSZ,
  VFIO_DEVICE_DETACH_IOMMUFD_PT,
  VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_INFO_MINSZ,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MINSZ,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_TYPE_MASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_IRQ_SET_DATA_TYPE_MASK,
  VFIO_IRQ_SET_MINSZ,
  VFIO_PCI_BAR0_REGION_INDEX,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  VFIO_REGION_INFO_MINSZ,
  vfioDeviceAttachIommufdPt,
  vfioDeviceBindIommufd,
  vfioDeviceDetachIommufdPt,
  vfioDeviceInfo,
  vfioIrqInfo,
  vfioIrqSet,
  vfioRegionInfo,
} from './vfio-uapi.js';

/** The vfio device of a cdev file. */
export function vfioDeviceOf(file: File): VfioPciDevice {
  const device = file.privateData as VfioPciDevice | undefined;
  if (!device || typeof device !== 'object' || !('pci' in device)) {
    throw new KernelError('EBADF', `${file.path} is not a vfio device`);
  }
  return device;
}

type IoctlHandler = (
  device: VfioPciDevice,
  arg: Uint8Array | null,
  sys: SyscallContext,
  file: File,
) => number | Promise<number>;

const REGION_SIZE = 2 ** VFIO_PCI_OFFSET_SHIFT;
/** Number of vectors per irq index: MSI-X has one; INTx, MSI, ERR and REQ none on these devices. */
const IRQ_COUNT = [0, 0, 1, 0, 0] as const;

/**
 * The `file_operations` of a vfio device cdev (`vfio_device_fops` with vfio-pci's ops). Until the
 * file is bound to an iommufd (`VFIO_DEVICE_BIND_IOMMUFD`), every other ioctl, `read` and `write`
 * is `EINVAL`, as for upstream's cdev. Unknown ioctls are `ENOTTY`.
 */
export function createVfioFileOperations(device: VfioPciDevice): FileOperations {
  return {
    open(file) {
      file.privateData = device;
      device.open();
    },
    ioctl(file, cmd, arg, sys) {
      const handler = IOCTLS.get(cmd);
      if (!handler) throw new KernelError('ENOTTY', `vfio: unknown ioctl ${hex(cmd)}`);
      if (cmd !== VFIO_DEVICE_BIND_IOMMUFD) checkAccess(device, file);
      return handler(device, arg, sys, file);
    },
    read(file, count, offset) {
      checkAccess(device, file);
      return regionRead(device, count, offset);
    },
    write(file, data, offset) {
      checkAccess(device, file);
      return regionWrite(device, data, offset);
    },
    llseek(file, offset) {
      file.pos = offset;
      return offset;
    },
    release(file) {
      return device.release(file);
    },
  };
}

/** vfio's `access_granted`: only the file that bound the device may drive it. */
function checkAccess(device: VfioPciDevice, file: File): void {
  if (!device.isBoundBy(file)) {
    throw new KernelError('EINVAL', `vfio ${device.pci.name}: not bound to an iommufd`);
  }
}

const IOCTLS = new Map<number, IoctlHandler>([
  [VFIO_DEVICE_BIND_IOMMUFD, bindIommufd],
  [VFIO_DEVICE_ATTACH_IOMMUFD_PT, attachIommufdPt],
  [VFIO_DEVICE_DETACH_IOMMUFD_PT, detachIommufdPt],
  [VFIO_DEVICE_GET_INFO, getInfo],
  [VFIO_DEVICE_GET_REGION_INFO, getRegionInfo],
  [VFIO_DEVICE_GET_IRQ_INFO, getIrqInfo],
  [VFIO_DEVICE_SET_IRQS, setIrqs],
  [
    VFIO_DEVICE_RESET,
    (device) => {
      device.reset();
      return 0;
    },
  ],
]);

/**
 * `VFIO_DEVICE_BIND_IOMMUFD`: `EINVAL` for flags, a negative fd or a device already bound;
 * `EBADF` for a bad fd, `EBADFD` for a file that is not an iommufd, `EBUSY` when the device is
 * bound to another iommufd. Returns the device object's id in `out_devid`.
 */
function bindIommufd(
  device: VfioPciDevice,
  arg: Uint8Array | null,
  sys: SyscallContext,
  file: File,
): number {
  const cmd = vfioCopyFromUser(vfioDeviceBindIommufd, arg, VFIO_DEVICE_BIND_IOMMUFD_MINSZ);
  if (cmd.flags !== 0) throw new KernelError('EINVAL', `vfio: bind flags ${hex(cmd.flags)}`);
  if (cmd.iommufd < 0) throw new KernelError('EINVAL', `vfio: bind to fd ${cmd.iommufd}`);
  const iommufd = sys.process.files.get(argFd(cmd.iommufd));
  const devId = device.bind(file, iommufd);
  vfioCopyToUser(vfioDeviceBindIommufd, arg!, { ...cmd, out_devid: devId });
  return 0;
}

/**
 * `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attach to the IOAS or HWPT `pt_id`, or move there hitlessly
 * when attached; `pt_id` returns the HWPT in use. `EINVAL` for unknown flags, `EOPNOTSUPP` for a
 * PASID (these functions have none), `ENOENT`/`EINVAL` from iommufd for a bad id.
 */
function attachIommufdPt(device: VfioPciDevice, arg: Uint8Array | null): number {
  const cmd = vfioCopyFromUser(vfioDeviceAttachIommufdPt, arg, VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ);
  checkPasidFlags(cmd.flags);
  const hwptId = device.binding!.attach(cmd.pt_id);
  vfioCopyToUser(vfioDeviceAttachIommufdPt, arg!, { ...cmd, pt_id: hwptId });
  return 0;
}

/** `VFIO_DEVICE_DETACH_IOMMUFD_PT`: detach from the page table; the device's DMA faults after. */
function detachIommufdPt(device: VfioPciDevice, arg: Uint8Array | null): number {
  const cmd = vfioCopyFromUser(vfioDeviceDetachIommufdPt, arg, VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ);
  checkPasidFlags(cmd.flags);
  device.binding!.detach();
  return 0;
}

function checkPasidFlags(flags: number): void {
  if (flags & ~VFIO_DEVICE_ATTACH_PASID) {
    throw new KernelError('EINVAL', `vfio: unknown flags ${hex(flags)}`);
  }
  if (flags & VFIO_DEVICE_ATTACH_PASID) {
    throw new KernelError('EOPNOTSUPP', 'vfio: the device does not support PASID attach');
  }
}

/** `VFIO_DEVICE_GET_INFO`: a resettable PCI device. */
function getInfo(_device: VfioPciDevice, arg: Uint8Array | null): number {
  const cmd = vfioCopyFromUser(vfioDeviceInfo, arg, VFIO_DEVICE_INFO_MINSZ);
  vfioCopyToUser(vfioDeviceInfo, arg!, {
    ...cmd,
    flags: VFIO_DEVICE_FLAGS_RESET | VFIO_DEVICE_FLAGS_PCI,
    num_regions: VFIO_PCI_NUM_REGIONS,
    num_irqs: VFIO_PCI_NUM_IRQS,
    cap_offset: 0,
  });
  return 0;
}

/**
 * `VFIO_DEVICE_GET_REGION_INFO`: BAR0 (the register window) and config space are readable and
 * writable; the other BARs, the ROM and VGA are empty. `EINVAL` for an index past the regions.
 */
function getRegionInfo(_device: VfioPciDevice, arg: Uint8Array | null): number {
  const cmd = vfioCopyFromUser(vfioRegionInfo, arg, VFIO_REGION_INFO_MINSZ);
  if (cmd.index >= VFIO_PCI_NUM_REGIONS) {
    throw new KernelError('EINVAL', `vfio: no region ${cmd.index}`);
  }
  const size = regionSize(cmd.index);
  vfioCopyToUser(vfioRegionInfo, arg!, {
    ...cmd,
    flags: size > 0 ? VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE : 0,
    cap_offset: 0,
    size: BigInt(size),
    offset: BigInt(cmd.index) << BigInt(VFIO_PCI_OFFSET_SHIFT),
  });
  return 0;
}

function regionSize(index: number): number {
  if (index === VFIO_PCI_BAR0_REGION_INDEX) return PCI_BAR_SIZE;
  if (index === VFIO_PCI_CONFIG_REGION_INDEX) return PCI_CONFIG_SPACE_SIZE;
  return 0;
}

/** `VFIO_DEVICE_GET_IRQ_INFO`: MSI-X has one vector signalled through an eventfd. */
function getIrqInfo(_device: VfioPciDevice, arg: Uint8Array | null): number {
  const cmd = vfioCopyFromUser(vfioIrqInfo, arg, VFIO_IRQ_INFO_MINSZ);
  if (cmd.index >= VFIO_PCI_NUM_IRQS) throw new KernelError('EINVAL', `vfio: no irq ${cmd.index}`);
  const count = IRQ_COUNT[cmd.index as 0]!;
  vfioCopyToUser(vfioIrqInfo, arg!, {
    ...cmd,
    flags: count > 0 ? VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE : 0,
    count,
  });
  return 0;
}

/**
 * `VFIO_DEVICE_SET_IRQS` (`vfio_set_irqs_validate_and_prepare` + vfio-pci's MSI-X actions):
 * exactly one data type and one action; `index`, `start` and `count` within the index's vectors;
 * `argsz` covering the data. MSI-X `ACTION_TRIGGER` with `DATA_EVENTFD` assigns vector 0's eventfd
 * (-1 unassigns it) and enables MSI-X; with `DATA_NONE` and `count` 0 it disables interrupts;
 * with `DATA_NONE` or `DATA_BOOL` (true) and `count` 1 it signals the eventfd from software.
 * `MASK`/`UNMASK` of MSI-X are `ENOTTY`, as upstream. Every other mistake is `EINVAL`.
 */
function setIrqs(device: VfioPciDevice, arg: Uint8Array | null, sys: SyscallContext): number {
  const cmd = vfioCopyFromUser(vfioIrqSet, arg, VFIO_IRQ_SET_MINSZ);
  const dataType = cmd.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
  const action = cmd.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
  if (
    cmd.flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK) ||
    !isOneBit(dataType) ||
    !isOneBit(action)
  ) {
    throw new KernelError('EINVAL', `vfio: bad irq set flags ${hex(cmd.flags)}`);
  }
  if (cmd.index >= VFIO_PCI_NUM_IRQS) throw new KernelError('EINVAL', `vfio: no irq ${cmd.index}`);
  const max = IRQ_COUNT[cmd.index as 0]!;
  if (max === 0 || cmd.start >= max || cmd.count > max - cmd.start) {
    throw new KernelError(
      'EINVAL',
      `vfio: irq ${cmd.index} has ${max} vectors; start ${cmd.start} count ${cmd.count}`,
    );
  }
  const elementSize =
    dataType === VFIO_IRQ_SET_DATA_EVENTFD ? 4 : dataType === VFIO_IRQ_SET_DATA_BOOL ? 1 : 0;
  const dataSize = elementSize * cmd.count;
  if (cmd.argsz - VFIO_IRQ_SET_MINSZ < dataSize) {
    throw new KernelError('EINVAL', `vfio: argsz ${cmd.argsz} has no room for ${dataSize} bytes`);
  }
  if (arg!.length < VFIO_IRQ_SET_MINSZ + dataSize) {
    throw new KernelError('EFAULT', `vfio: the irq set data runs past the user buffer`);
  }
  const data = new DataView(arg!.buffer, arg!.byteOffset + VFIO_IRQ_SET_MINSZ, dataSize);
  if (cmd.index !== VFIO_PCI_MSIX_IRQ_INDEX) throw new KernelError('EINVAL', 'vfio: unreachable');
  if (action !== VFIO_IRQ_SET_ACTION_TRIGGER) {
    throw new KernelError('ENOTTY', 'vfio: MSI-X vectors cannot be masked');
  }
  if (dataType === VFIO_IRQ_SET_DATA_NONE && cmd.count === 0) {
    device.disableInterrupts();
  } else if (dataType === VFIO_IRQ_SET_DATA_EVENTFD) {
    const fd = data.getInt32(0, true);
    device.setMsixTrigger(fd === -1 ? null : sys.process.files.get(argFd(fd)));
  } else if (dataType === VFIO_IRQ_SET_DATA_NONE || data.getUint8(0) !== 0) {
    device.triggerMsix();
  }
  return 0;
}

function isOneBit(value: number): boolean {
  return value !== 0 && (value & (value - 1)) === 0;
}

/** The region and the offset in it of a file offset (`index << VFIO_PCI_OFFSET_SHIFT | off`). */
function regionAccess(
  device: VfioPciDevice,
  offset: number,
  count: number,
): { index: number; at: number } {
  const index = Math.floor(offset / REGION_SIZE);
  const at = offset % REGION_SIZE;
  const size = index < VFIO_PCI_NUM_REGIONS ? regionSize(index) : 0;
  if (count <= 0 || at + count > size) {
    throw new KernelError(
      'EINVAL',
      `vfio ${device.pci.name}: ${count} bytes at ${hex(at)} are outside region ${index} (${size} bytes)`,
    );
  }
  if (index === VFIO_PCI_BAR0_REGION_INDEX) {
    if (at % 4 !== 0 || count % 4 !== 0) {
      throw new KernelError(
        'EINVAL',
        `vfio ${device.pci.name}: BAR0 takes aligned 32-bit accesses`,
      );
    }
    if ((device.pci.readConfig16(PCI_COMMAND) & PCI_COMMAND_MEMORY) === 0) {
      throw new KernelError('EIO', `vfio ${device.pci.name}: memory decode is off`);
    }
  }
  return { index, at };
}

/** `read` of a region: BAR0 registers as little-endian u32s, or config space bytes. */
function regionRead(device: VfioPciDevice, count: number, offset: number): Uint8Array {
  const { index, at } = regionAccess(device, offset, count);
  const out = new Uint8Array(count);
  const view = new DataView(out.buffer);
  if (index === VFIO_PCI_BAR0_REGION_INDEX) {
    for (let i = 0; i < count; i += 4) view.setUint32(i, device.pci.readRegister(at + i), true);
  } else {
    for (let i = 0; i < count; i++) {
      const word = device.pci.readConfig16((at + i) & ~1);
      out[i] = ((at + i) & 1 ? word >> 8 : word) & 0xff;
    }
  }
  return out;
}

/**
 * `write` of a region. Config space writes go to the function a 16-bit word at a time, except
 * two fields vfio-pci virtualizes: MSI-X control belongs to `VFIO_DEVICE_SET_IRQS` (writes are
 * dropped), and a function-level reset requested in device control is done as
 * `VFIO_DEVICE_RESET` does it.
 */
function regionWrite(device: VfioPciDevice, data: Uint8Array, offset: number): number {
  const { index, at } = regionAccess(device, offset, data.length);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  if (index === VFIO_PCI_BAR0_REGION_INDEX) {
    for (let i = 0; i < data.length; i += 4) {
      device.pci.writeRegister(at + i, view.getUint32(i, true));
    }
    return data.length;
  }
  for (let word = at & ~1; word < at + data.length; word += 2) {
    let value = device.pci.readConfig16(word);
    for (let byte = 0; byte < 2; byte++) {
      const i = word + byte - at;
      if (i < 0 || i >= data.length) continue;
      value = (value & ~(0xff << (8 * byte))) | (data[i]! << (8 * byte));
    }
    if (word === PCI_MSIX_FLAGS) continue;
    if (word === PCI_EXP_DEVCTL && value & PCI_EXP_DEVCTL_BCR_FLR) {
      device.reset();
      continue;
    }
    device.pci.writeConfig16(word, value);
  }
  return data.length;
}

/**
 * vfio's argument copy-in: the caller's `argsz` must cover `minsz` (`EINVAL`); the kernel reads
 * the struct up to the smaller of `argsz` and its own size, the rest as zero, and ignores bytes
 * past it. `EFAULT` when the buffer is shorter than what is read.
 */
export function vfioCopyFromUser<T extends { argsz: number }>(
  codec: StructCodec<T>,
  arg: Uint8Array | null,
  minsz: number,
): T {
  if (!arg || arg.length < 4) throw new KernelError('EFAULT', `${codec.name}: no argument`);
  const argsz = new DataView(arg.buffer, arg.byteOffset, 4).getUint32(0, true);
  if (argsz < minsz) {
    throw new KernelError('EINVAL', `${codec.name}: argsz ${argsz} is smaller than ${minsz}`);
  }
  const length = Math.min(argsz, codec.size);
  if (arg.length < length) {
    throw new KernelError('EFAULT', `${codec.name}: argsz ${argsz} runs past the user buffer`);
  }
  const copy = new Uint8Array(codec.size);
  copy.set(arg.subarray(0, length));
  return codec.decode(copy);
}

/** vfio's copy-out: the struct, over at most `argsz` bytes of the argument. */
export function vfioCopyToUser<T extends { argsz: number }>(
  codec: StructCodec<T>,
  arg: Uint8Array,
  value: T,
): void {
  const length = Math.min(value.argsz, codec.size, arg.length);
  arg.set(codec.encode(value).subarray(0, length));
}
