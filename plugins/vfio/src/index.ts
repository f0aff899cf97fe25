export {
  vfioModule as default,
  parseVfioPciIds,
  VFIO_SERVICE,
  VfioDevices,
} from './vfio-module.js';
export { VFIO_DEVICES_DIR, VfioPciDevice, type VfioKernel } from './vfio-pci-device.js';
export {
  createVfioFileOperations,
  vfioCopyFromUser,
  vfioCopyToUser,
  vfioDeviceOf,
} from './vfio-file-operations.js';
export { VfioDevice, type VfioRegionInfo, type VfioIrqInfo } from './vfio-device.js';
export * from './vfio-uapi.js';
export { VFIO_PCI_RESET_ON_FREEZE, createVfioPciLuoHandler } from './vfio-pci-luo-handler.js';
export { VFIO_PCI_LUO_COMPATIBLE, vfioPciCoreDeviceSer } from './vfio-pci-luo-abi.js';
