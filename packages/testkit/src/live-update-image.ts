import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { createKernelImage } from '@liveupdate/kernel';
import type { KernelImage } from '@liveupdate/machine';

/**
 * The command line of every image the testkit builds: KHO and LUO on, and free frames poisoned
 * with `0xaa` at boot, so that memory a handler forgot to preserve reads as poison after the
 * kexec instead of passing by luck.
 */
export const LIVEUPDATE_CMDLINE = 'kho=on liveupdate=on page_poison=on';

/**
 * The LUO kernel module, resolved from the testkit's own dependencies so that the caller's
 * package need not list `@liveupdate/core` for the kernel worker to find it.
 */
const LIVEUPDATE_MODULE = pathToFileURL(
  createRequire(import.meta.url).resolve('@liveupdate/core/module'),
).href;

/**
 * The testkit's own kernel module (`@liveupdate/testkit/module`): the `testkit_*` syscalls for
 * stats, fault injection and probes. Beside this file in `dist/`.
 */
const TESTKIT_MODULE = new URL('./testkit-module.js', import.meta.url).href;

/** Options of {@link liveUpdateImage}. */
export interface LiveUpdateImageOptions {
  /** The kernel version string, e.g. `"6.18.1"`; shown in `dmesg` and `machine.kernelVersion`. */
  readonly version: string;
  /**
   * Modules to load after LUO, in order: usually the module that registers the handler under
   * test. Specifiers are `file:` URLs, absolute paths, paths relative to {@link moduleBase}, or
   * package names resolved from it.
   */
  readonly modules: readonly string[];
  /**
   * Extra command-line words, appended to {@link LIVEUPDATE_CMDLINE}. The last occurrence of a
   * key wins, so `"liveupdate=off"` turns LUO off again; `"liveupdate.max_sessions=2"` and
   * `"liveupdate.max_files=1"` set LUO's limits; `"liveupdate.fault_injection=on"` allows
   * `injectFault`.
   */
  readonly cmdline?: string;
  /** Where relative and bare module specifiers resolve from; usually `import.meta.url`. */
  readonly moduleBase?: string;
  /**
   * Rehearse a live update when the image is loaded (`createKernelImage({ rehearse: true })`):
   * the kernel logs `rehearsal: …` once it boots, and a module's `rehearse` runs. Default false.
   */
  readonly rehearse?: boolean;
}

/**
 * A kernel image with LUO on: the `liveupdate` module (`@liveupdate/core/module`) first, the
 * testkit's module (`@liveupdate/testkit/module`) second, then `modules`, on the command line
 * {@link LIVEUPDATE_CMDLINE} plus `cmdline`.
 *
 * @example
 * ```ts
 * const image = liveUpdateImage({
 *   version: '6.18.1',
 *   modules: [new URL('./my-handler-module.js', import.meta.url).href],
 * });
 * await machine.boot(image);
 * ```
 */
export function liveUpdateImage(options: LiveUpdateImageOptions): KernelImage {
  return createKernelImage({
    version: options.version,
    cmdline: options.cmdline ? `${LIVEUPDATE_CMDLINE} ${options.cmdline}` : LIVEUPDATE_CMDLINE,
    modules: [LIVEUPDATE_MODULE, TESTKIT_MODULE, ...options.modules],
    ...(options.moduleBase === undefined ? {} : { moduleBase: options.moduleBase }),
    ...(options.rehearse === undefined ? {} : { rehearse: options.rehearse }),
  });
}
