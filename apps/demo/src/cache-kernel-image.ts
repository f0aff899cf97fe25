import { createKernelImage } from '@liveupdate/kernel';
import type { KernelImage } from '@liveupdate/machine';

/** What the cache's kernels load, in order: LUO first, then the memfd module and its handler. */
export const CACHE_KERNEL_MODULES = ['@liveupdate/core/module', '@liveupdate/plugin-memfd'];

/** A kernel image with KHO and LUO on and the memfd module, resolved from this package. */
export function cacheKernelImage(version: string): KernelImage {
  return createKernelImage({
    version,
    cmdline: 'kho=on liveupdate=on',
    modules: CACHE_KERNEL_MODULES,
    moduleBase: import.meta.url,
  });
}
