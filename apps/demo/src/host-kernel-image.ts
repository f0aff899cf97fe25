import { createKernelImage } from '@liveupdate/kernel';
import type { KernelImage } from '@liveupdate/machine';

/** The memfd plugin as it ships now: writes `memfd-v3` (or `memfd-v2`), reads both. */
export const MEMFD_MODULE = '@liveupdate/plugin-memfd';

/**
 * The memfd plugin as 6.18.0 shipped it, for `--scenario skew`: reads and writes only
 * `memfd-v2`. Its entry is `@liveupdate/plugin-memfd/memfd-v2`.
 *
 * TEMPORARY: that entry is not merged yet, so this points at {@link MEMFD_MODULE}; set it to
 * `'@liveupdate/plugin-memfd/memfd-v2'` once it is. This constant is the only place to change.
 */
export const MEMFD_V2_MODULE: string = MEMFD_MODULE;

/** Options of {@link hostKernelImage}. */
export interface HostKernelOptions {
  /**
   * Boot with `vfio-pci.reset_on_freeze=1`: vfio-pci resets the device when LUO freezes it, as
   * upstream does today, so its DMA stops for the update. For the benchmark's comparison.
   */
  readonly resetOnFreeze?: boolean;
  /** The memfd module the image loads. Default {@link MEMFD_MODULE}. */
  readonly memfd?: string;
  /** Build the image without vfio-pci: it cannot take a passthrough device. Default `true`. */
  readonly vfio?: boolean;
}

/**
 * What the host's kernels load, in order: LUO, memfd, iommufd, vfio-pci (unless left out). Each
 * module registers its LUO file handler (`memfd-v…`, `iommufd-v1`, `vfio-pci-v1`), so they are
 * preserved in that order of dependency.
 */
export function hostKernelModules(options: HostKernelOptions = {}): string[] {
  return [
    '@liveupdate/core/module',
    options.memfd ?? MEMFD_MODULE,
    '@liveupdate/plugin-iommufd',
    ...(options.vfio === false ? [] : ['@liveupdate/plugin-vfio']),
  ];
}

/** A kernel image with KHO and LUO on and the host's modules, resolved from this package. */
export function hostKernelImage(version: string, options: HostKernelOptions = {}): KernelImage {
  return createKernelImage({
    version,
    cmdline: `kho=on liveupdate=on${options.resetOnFreeze ? ' vfio-pci.reset_on_freeze=1' : ''}`,
    modules: hostKernelModules(options),
    moduleBase: import.meta.url,
  });
}
