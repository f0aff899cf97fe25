import { createKernelImage } from '@liveupdate/kernel';
import type { KernelImage } from '@liveupdate/machine';

/** The memfd plugin as it ships now: writes `memfd-v3` (or `memfd-v2`), reads both. */
export const MEMFD_MODULE = '@liveupdate/plugin-memfd';

/** The memfd plugin as 6.18.0 shipped it, for `--scenario skew`: reads and writes only `memfd-v2`. */
export const MEMFD_V2_MODULE = '@liveupdate/plugin-memfd/memfd-v2';

/** The LUO core as it ships now: writes `luo-v2`, reads `luo-v2` and `luo-v1`. */
export const LUO_MODULE = '@liveupdate/core/module';

/** The LUO core as 6.18.0 shipped it, for `--scenario skew`: reads and writes only `luo-v1`. */
export const LUO_V1_MODULE = '@liveupdate/core/module-luo-v1';

/** Options of {@link hostKernelImage}. */
export interface HostKernelOptions {
  /**
   * Rehearse a live update when the image is loaded (`createKernelImage({ rehearse })`), so the
   * blackout does not run the update's code for the first time. Default `true`.
   */
  readonly rehearse?: boolean;
  /**
   * Boot with `vfio-pci.reset_on_freeze=1`: vfio-pci resets the device when LUO freezes it, as
   * upstream does today, so its DMA stops for the update. For the benchmark's comparison.
   */
  readonly resetOnFreeze?: boolean;
  /** The LUO core module the image loads. Default {@link LUO_MODULE}. */
  readonly luo?: string;
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
    options.luo ?? LUO_MODULE,
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
    rehearse: options.rehearse ?? true,
  });
}
