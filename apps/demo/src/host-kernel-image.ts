import { createKernelImage } from '@liveupdate/kernel';
import type { KernelImage } from '@liveupdate/machine';

/**
 * What the host's kernels load, in order: LUO, memfd, iommufd, vfio-pci. Each module registers its
 * LUO file handler (`memfd-v2`, `iommufd-v1`, `vfio-pci-v1`), so they are preserved in that order
 * of dependency.
 */
export const HOST_KERNEL_MODULES = [
  '@liveupdate/core/module',
  '@liveupdate/plugin-memfd',
  '@liveupdate/plugin-iommufd',
  '@liveupdate/plugin-vfio',
];

/** Options of {@link hostKernelImage}. */
export interface HostKernelOptions {
  /**
   * Boot with `vfio-pci.reset_on_freeze=1`: vfio-pci resets the device when LUO freezes it, as
   * upstream does today, so its DMA stops for the update. For the benchmark's comparison.
   */
  readonly resetOnFreeze?: boolean;
}

/** A kernel image with KHO and LUO on and the host's modules, resolved from this package. */
export function hostKernelImage(version: string, options: HostKernelOptions = {}): KernelImage {
  return createKernelImage({
    version,
    cmdline: `kho=on liveupdate=on${options.resetOnFreeze ? ' vfio-pci.reset_on_freeze=1' : ''}`,
    modules: HOST_KERNEL_MODULES,
    moduleBase: import.meta.url,
  });
}
