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
  };
}
