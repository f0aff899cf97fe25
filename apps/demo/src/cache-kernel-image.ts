import { createKernelImage } from '@liveupdate/kernel';
import type { KernelImage } from '@liveupdate/machine';

/** What the cache's kernels load, in order: LUO first, then the memfd module and its handler. */
export const CACHE_KERNEL_MODULES = ['@liveupdate/core/module', '@liveupdate/plugin-memfd'];

/**
 * A kernel image with KHO and LUO on and the memfd module, resolved from this package. It
 * rehearses a live update when loaded (`createKernelImage({ rehearse })`) unless `rehearse` is
 * false, which the blackout benchmark uses for its comparison.
 */
export function cacheKernelImage(version: string, { rehearse = true } = {}): KernelImage {
  return createKernelImage({
    version,
    cmdline: 'kho=on liveupdate=on',
    modules: CACHE_KERNEL_MODULES,
    moduleBase: import.meta.url,
    rehearse,
  });
}
