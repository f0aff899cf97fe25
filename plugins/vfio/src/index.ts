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
