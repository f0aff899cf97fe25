import { registerFileHandler, registerFlb } from '@liveupdate/core';
import { IOMMU_SERVICE, KernelError, defineModule } from '@liveupdate/kernel';
import { MEMFD_SERVICE } from '@liveupdate/plugin-memfd';
import { IOMMU_FLB_SERVICE, createIommuFlb, retrieveIommuFlbFor } from './iommu-flb.js';
import { createIommufdFileOperations } from './iommufd-file-operations.js';
import { IOMMU_FLB_COMPATIBLE, IOMMUFD_LUO_COMPATIBLE } from './iommufd-lu-abi.js';
import { createIommufdLuoHandler } from './iommufd-luo-handler.js';

/** The path of the iommufd char device. */
export const IOMMUFD_DEVICE_PATH = '/dev/iommu';

/**
 * The iommufd kernel module: registers {@link IOMMUFD_DEVICE_PATH}, where each open is a new
 * iommufd context with its IOAS, HWPT and device objects, its memfd-backed mappings and the IOMMU
 * domains (from the kernel's `IOMMU_SERVICE`) that follow them. List it after the memfd module
 * (`@liveupdate/plugin-memfd`) in the kernel image: without it every file is "not a memfd" and
 * `IOMMU_IOAS_MAP_FILE` fails with `EINVAL`.
 *
 * With LUO enabled it also registers the `"iommufd-v1"` file handler and links this boot's IOMMU
 * FLB (`IOMMU_FLB_SERVICE`) to it; without LUO (not loaded, or `liveupdate=off`) iommufds work and cannot
 * be preserved.
 */
export const iommufdModule = defineModule({
  name: 'iommufd',
  reads: [IOMMUFD_LUO_COMPATIBLE, IOMMU_FLB_COMPATIBLE],
  init(ctx) {
    const iommu = ctx.services.get(IOMMU_SERVICE);
    if (!iommu) throw new Error('iommufd: the kernel provides no IOMMU driver (IOMMU_SERVICE)');
    const memfds = ctx.services.get(MEMFD_SERVICE);
    if (!memfds) ctx.log.info('iommufd: no memfd module; nothing can be mapped');
    const kernel = {
      pages: ctx.pages,
      vfs: ctx.vfs,
      iommu,
      memfds,
      memory: ctx.memory,
      kho: ctx.kho,
      log: ctx.log,
    };
    const fops = createIommufdFileOperations(kernel);
    ctx.vfs.registerCharDevice(IOMMUFD_DEVICE_PATH, fops);
    const flb = createIommuFlb(kernel);
    ctx.services.provide(IOMMU_FLB_SERVICE, flb);
    const handler = createIommufdLuoHandler(kernel, fops, () =>
      retrieveIommuFlbFor(ctx, flb, 'iommufd'),
    );
    try {
      registerFileHandler(ctx, handler);
    } catch (error) {
      if (!KernelError.isInstance(error) || error.code !== 'EOPNOTSUPP') throw error;
      ctx.log.info('iommufd: live update is not available; iommufds cannot be preserved');
      return;
    }
    registerFlb(ctx, handler, flb);
  },
});
