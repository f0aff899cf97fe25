import { pathToFileURL } from 'node:url';
import type { KernelImage } from '@liveupdate/machine';

/** Options of {@link createKernelImage}. */
export interface KernelImageOptions {
  /** Default `"6.18.0-liveupdate"`. */
  readonly version?: string;
  /** Default `""`. `kho=on` enables KHO, `page_poison=on` poisons free frames. */
  readonly cmdline?: string;
  /** Module specifiers to load, in order. Default none. */
  readonly modules?: readonly string[];
  /** Where bare specifiers resolve from (a `file:` URL, usually `import.meta.url`). Default: the cwd. */
  readonly moduleBase?: string;
  /**
   * Rehearse a live update when the image is loaded (`machine.boot`, `kexec_load`), before the
   * kernel boots: two private kernels of this image, on private RAM of the worker's own, boot, run
   * every module's `rehearse` (a memfd preserved and retrieved, say) and kexec from one to the
   * other. The kernel that then boots runs those code paths for the second time, not the first,
   * inside its blackout: V8 has compiled and profiled them (the figures are in the demo's README).
   * Costs tens of milliseconds per load; nothing of it reaches the machine but one line of this
   * kernel's log. Default `false`.
   */
  readonly rehearse?: boolean;
}

/**
 * A {@link KernelImage} of this kernel, for `machine.boot()` and `process.kexecLoad()`.
 *
 * @example
 * ```ts
 * const image = createKernelImage({
 *   version: '6.18.1',
 *   cmdline: 'kho=on',
 *   modules: ['@liveupdate/plugin-memfd'],
 *   moduleBase: import.meta.url,
 * });
 * ```
 */
export function createKernelImage(options: KernelImageOptions = {}): KernelImage {
  return {
    entry: new URL('./worker.js', import.meta.url).href,
    version: options.version ?? '6.18.0-liveupdate',
    cmdline: options.cmdline ?? '',
    modules: [...(options.modules ?? [])],
    moduleBase: options.moduleBase ?? pathToFileURL(`${process.cwd()}/`).href,
    ...(options.rehearse ? { rehearse: true } : {}),
  };
}
