import { defineStruct, u16, u32, u64 } from '@liveupdate/core';

/**
 * The vfio-pci handler's ABI (`include/linux/kho/abi/vfio_pci.h`, `VFIO_PCI_LUO_FH_COMPATIBLE`).
 * Change the compatible string whenever the layout below changes: the next kernel matches it
 * exactly.
 */
export const VFIO_PCI_LUO_COMPATIBLE = 'vfio-pci-v1';

/**
 * `struct vfio_pci_core_device_ser` (16 bytes), in one KHO-preserved page whose physical address
 * is the file's `serialized_data`: upstream's `{ u32 domain; u16 bdf }` (v3–v5), padded to the
 * natural alignment of what follows, then the IOMMU series' `struct vfio_iommufd_ser` — here the
 * LUO token of the iommufd the device is bound to, as LUO's own `u64` (upstream's snapshot keeps a
 * `u32`; a token wider than that would not cross).
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 4 | `domain`: the PCI segment (always 0 on this machine) |
 * | 4 | 2 | `bdf`: bus << 8 \| device << 3 \| function (`pci_dev_id`) |
 * | 6 | 2 | `reserved`: 0 |
 * | 8 | 8 | `iommufd_token`: the bound iommufd's token in the same session |
 */
export const vfioPciCoreDeviceSer = defineStruct('vfio_pci_core_device_ser', [
  ['domain', u32],
  ['bdf', u16],
  ['reserved', u16],
  ['iommufdToken', u64],
] as const);
