export { iommufdModule as default, IOMMUFD_DEVICE_PATH } from './iommufd-module.js';
export {
  IommufdDevice,
  type IommufdMapFileOptions,
  type IommufdMapping,
  type IovaRange,
} from './iommufd-device.js';
export { IommufdContext, type IommufdLuIncoming, type IommufdObject } from './iommufd-context.js';
export {
  IOMMU_FLB_SERVICE,
  createIommuFlb,
  retrieveIommuFlbFor,
  type IommuFlbKernel,
} from './iommu-flb.js';
export {
  IOMMUFD_LU_REQUIRED_SEALS,
  createIommufdLuoHandler,
  type IommufdLuoKernel,
} from './iommufd-luo-handler.js';
export {
  IOMMUFD_LUO_COMPATIBLE,
  IOMMU_FLB_COMPATIBLE,
  IOMMU_LU_FLB_VERSION,
  iommufdHwptLu,
  iommufdLu,
  iommufdLuSize,
  iommuLuFlbSer,
} from './iommufd-lu-abi.js';
export { iommufdDeviceBind } from './iommufd-device-bind.js';
export { IommufdDeviceObject, type IommufdBoundDevice } from './iommufd-device-object.js';
export { IommufdHwptPaging } from './iommufd-hwpt-paging.js';
export {
  createIommufdFileOperations,
  iommufdContextOf,
  type IommufdKernel,
} from './iommufd-file-operations.js';
export {
  IOAS_IOVA_LAST,
  IOAS_IOVA_START,
  IommufdIoas,
  type IoasKernel,
  type IoptArea,
  type MapFileRequest,
} from './iommufd-ioas.js';
export * from './iommufd-uapi.js';
