/**
 * The vfio device uAPI (`include/uapi/linux/vfio.h`) for device cdevs: ioctl numbers and argument
 * structs. Every argument starts with `__u32 argsz` (the caller's size of the struct) and
 * `__u32 flags`. As in the kernel, each ioctl reads only its `minsz` bytes (the struct up to its
 * last mandatory field): `argsz` below it is `EINVAL`, bytes beyond what the kernel knows are
 * ignored, and output is written back over at most `argsz` bytes.
 *
 * Device regions are reached with `pread`/`pwrite` at `index << VFIO_PCI_OFFSET_SHIFT` plus the
 * offset in the region.
 */
import { _IO, defineStruct, s32, u32, u64 } from '@liveupdate/core';

/** The ioctl type byte of vfio (`';'`, shared with iommufd, whose numbers start at 0x80). */
export const VFIO_TYPE = 0x3b;
/** `VFIO_BASE`: vfio's ioctl numbers start here. */
export const VFIO_BASE = 100;

/** `VFIO_DEVICE_GET_INFO`: flags and the number of regions and irqs; {@link vfioDeviceInfo}. */
export const VFIO_DEVICE_GET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 7);
/** `VFIO_DEVICE_GET_REGION_INFO`: size, offset and flags of a region; {@link vfioRegionInfo}. */
export const VFIO_DEVICE_GET_REGION_INFO = _IO(VFIO_TYPE, VFIO_BASE + 8);
/** `VFIO_DEVICE_GET_IRQ_INFO`: how many vectors an irq index has; {@link vfioIrqInfo}. */
export const VFIO_DEVICE_GET_IRQ_INFO = _IO(VFIO_TYPE, VFIO_BASE + 9);
/** `VFIO_DEVICE_SET_IRQS`: enable, disable or trigger interrupts; {@link vfioIrqSet}. */
export const VFIO_DEVICE_SET_IRQS = _IO(VFIO_TYPE, VFIO_BASE + 10);
/** `VFIO_DEVICE_RESET`: function-level reset; no argument. */
export const VFIO_DEVICE_RESET = _IO(VFIO_TYPE, VFIO_BASE + 11);
/** `VFIO_DEVICE_BIND_IOMMUFD`: bind the cdev to an iommufd; {@link vfioDeviceBindIommufd}. */
export const VFIO_DEVICE_BIND_IOMMUFD = _IO(VFIO_TYPE, VFIO_BASE + 18);
/** `VFIO_DEVICE_ATTACH_IOMMUFD_PT`: attach to an IOAS or HWPT; {@link vfioDeviceAttachIommufdPt}. */
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 19);
/** `VFIO_DEVICE_DETACH_IOMMUFD_PT`: detach; {@link vfioDeviceDetachIommufdPt}. */
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = _IO(VFIO_TYPE, VFIO_BASE + 20);

/** `vfio_device_info.flags`: the device supports `VFIO_DEVICE_RESET`. */
export const VFIO_DEVICE_FLAGS_RESET = 1 << 0;
/** `vfio_device_info.flags`: a vfio-pci device. */
export const VFIO_DEVICE_FLAGS_PCI = 1 << 1;

/** `vfio_region_info.flags`. */
export const VFIO_REGION_INFO_FLAG_READ = 1 << 0;
export const VFIO_REGION_INFO_FLAG_WRITE = 1 << 1;
export const VFIO_REGION_INFO_FLAG_MMAP = 1 << 2;

/** vfio-pci region indices. */
export const VFIO_PCI_BAR0_REGION_INDEX = 0;
export const VFIO_PCI_BAR5_REGION_INDEX = 5;
export const VFIO_PCI_ROM_REGION_INDEX = 6;
export const VFIO_PCI_CONFIG_REGION_INDEX = 7;
export const VFIO_PCI_VGA_REGION_INDEX = 8;
export const VFIO_PCI_NUM_REGIONS = 9;
/** A region's offset in the device file: `index << VFIO_PCI_OFFSET_SHIFT`. */
export const VFIO_PCI_OFFSET_SHIFT = 40;

/** vfio-pci irq indices. */
export const VFIO_PCI_INTX_IRQ_INDEX = 0;
export const VFIO_PCI_MSI_IRQ_INDEX = 1;
export const VFIO_PCI_MSIX_IRQ_INDEX = 2;
export const VFIO_PCI_ERR_IRQ_INDEX = 3;
export const VFIO_PCI_REQ_IRQ_INDEX = 4;
export const VFIO_PCI_NUM_IRQS = 5;

/** `vfio_irq_info.flags`. */
export const VFIO_IRQ_INFO_EVENTFD = 1 << 0;
export const VFIO_IRQ_INFO_MASKABLE = 1 << 1;
export const VFIO_IRQ_INFO_AUTOMASKED = 1 << 2;
export const VFIO_IRQ_INFO_NORESIZE = 1 << 3;

/** `vfio_irq_set.flags`: exactly one `DATA_*` and one `ACTION_*`. */
export const VFIO_IRQ_SET_DATA_NONE = 1 << 0;
export const VFIO_IRQ_SET_DATA_BOOL = 1 << 1;
export const VFIO_IRQ_SET_DATA_EVENTFD = 1 << 2;
export const VFIO_IRQ_SET_ACTION_MASK = 1 << 3;
export const VFIO_IRQ_SET_ACTION_UNMASK = 1 << 4;
export const VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5;
export const VFIO_IRQ_SET_DATA_TYPE_MASK =
  VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD;
export const VFIO_IRQ_SET_ACTION_TYPE_MASK =
  VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER;

/** `vfio_device_attach_iommufd_pt.flags`: attach a PASID (not supported by these devices). */
export const VFIO_DEVICE_ATTACH_PASID = 1 << 0;

/**
 * `struct vfio_device_info` (24 bytes; `minsz` 16): `argsz` @0, `flags` @4 out, `num_regions` @8
 * out, `num_irqs` @12 out, `cap_offset` @16 out (0: no capability chain), `pad` @20.
 */
export const vfioDeviceInfo = defineStruct('vfio_device_info', [
  ['argsz', u32],
  ['flags', u32],
  ['num_regions', u32],
  ['num_irqs', u32],
  ['cap_offset', u32],
  ['pad', u32],
] as const);
export const VFIO_DEVICE_INFO_MINSZ = 16;

/**
 * `struct vfio_region_info` (32 bytes, all of it `minsz`): `argsz` @0, `flags` @4 out, `index`
 * @8 in, `cap_offset` @12 out, `size` u64 @16 out, `offset` u64 @24 out.
 */
export const vfioRegionInfo = defineStruct('vfio_region_info', [
  ['argsz', u32],
  ['flags', u32],
  ['index', u32],
  ['cap_offset', u32],
  ['size', u64],
  ['offset', u64],
] as const);
export const VFIO_REGION_INFO_MINSZ = 32;

/** `struct vfio_irq_info` (16 bytes): `argsz` @0, `flags` @4 out, `index` @8 in, `count` @12 out. */
export const vfioIrqInfo = defineStruct('vfio_irq_info', [
  ['argsz', u32],
  ['flags', u32],
  ['index', u32],
  ['count', u32],
] as const);
export const VFIO_IRQ_INFO_MINSZ = 16;

/**
 * `struct vfio_irq_set` (20 bytes, then `data[]`): `argsz` @0 (header and data), `flags` @4,
 * `index` @8, `start` @12, `count` @16. With `DATA_EVENTFD` the data is one `__s32` fd per vector
 * (-1 unassigns it); with `DATA_BOOL` one byte per vector.
 */
export const vfioIrqSet = defineStruct('vfio_irq_set', [
  ['argsz', u32],
  ['flags', u32],
  ['index', u32],
  ['start', u32],
  ['count', u32],
] as const);
export const VFIO_IRQ_SET_MINSZ = 20;

/**
 * `struct vfio_device_bind_iommufd` (16 bytes, all `minsz`): `argsz` @0, `flags` @4 (0), `iommufd`
 * s32 @8 in, `out_devid` u32 @12 out: the device's object id in the iommufd.
 */
export const vfioDeviceBindIommufd = defineStruct('vfio_device_bind_iommufd', [
  ['argsz', u32],
  ['flags', u32],
  ['iommufd', s32],
  ['out_devid', u32],
] as const);
export const VFIO_DEVICE_BIND_IOMMUFD_MINSZ = 16;

/**
 * `struct vfio_device_attach_iommufd_pt` (16 bytes; `minsz` 12): `argsz` @0, `flags` @4, `pt_id`
 * @8 in/out (an IOAS or HWPT id in; the HWPT attached to out), `pasid` @12 (with
 * {@link VFIO_DEVICE_ATTACH_PASID}).
 */
export const vfioDeviceAttachIommufdPt = defineStruct('vfio_device_attach_iommufd_pt', [
  ['argsz', u32],
  ['flags', u32],
  ['pt_id', u32],
  ['pasid', u32],
] as const);
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT_MINSZ = 12;

/** `struct vfio_device_detach_iommufd_pt` (12 bytes; `minsz` 8): `argsz` @0, `flags` @4, `pasid` @8. */
export const vfioDeviceDetachIommufdPt = defineStruct('vfio_device_detach_iommufd_pt', [
  ['argsz', u32],
  ['flags', u32],
  ['pasid', u32],
] as const);
export const VFIO_DEVICE_DETACH_IOMMUFD_PT_MINSZ = 8;
