import { IOMMU_SERVICE, defineModule } from '@liveupdate/kernel';
import { MEMFD_SERVICE } from '@liveupdate/plugin-memfd';
import { createIommufdFileOperations } from './iommufd-file-operations.js';

/** The path of the iommufd char device. */
export const IOMMUFD_DEVICE_PATH = '/dev/iommu';

/**
 * The iommufd kernel module: registers {@link IOMMUFD_DEVICE_PATH}, where each open is a new
 * iommufd context with its IOAS, HWPT and device objects, its memfd-backed mappings and the IOMMU
 * domains (from the kernel's `IOMMU_SERVICE`) that follow them. List it after the memfd module
 * (`@liveupdate/plugin-memfd`) in the kernel image: without it every file is "not a memfd" and
 * `IOMMU_IOAS_MAP_FILE` fails with `EINVAL`.
 */
export const iommufdModule = defineModule({
  name: 'iommufd',
  init(ctx) {
    const iommu = ctx.services.get(IOMMU_SERVICE);
    if (!iommu) throw new Error('iommufd: the kernel provides no IOMMU driver (IOMMU_SERVICE)');
    const memfds = ctx.services.get(MEMFD_SERVICE);
    if (!memfds) ctx.log.info('iommufd: no memfd module; nothing can be mapped');
    ctx.vfs.registerCharDevice(
      IOMMUFD_DEVICE_PATH,
      createIommufdFileOperations({ pages: ctx.pages, vfs: ctx.vfs, iommu, memfds }),
    );
  },
});
