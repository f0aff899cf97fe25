export { iommufdModule as default, IOMMUFD_DEVICE_PATH } from './iommufd-module.js';
export {
  IommufdDevice,
  type IommufdMapFileOptions,
  type IommufdMapping,
  type IovaRange,
} from './iommufd-device.js';
export { IommufdContext } from './iommufd-context.js';
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
