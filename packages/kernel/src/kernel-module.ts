import type { Process } from '@liveupdate/machine';
import type { CommandLine } from './command-line.js';
import type { KexecControl } from './kexec-target.js';
import type { KexecHandover } from './kho/kexec-handover.js';
import type { KernelLog } from './kernel-log.js';
import type { ModuleMemory } from './module-memory.js';
import type { PageAllocator } from './page-allocator.js';
import type { RebootNotifierChain } from './reboot-notifier-chain.js';
import type { SyscallTable } from './syscalls/syscall-table.js';
import type { Vfs } from './vfs/vfs.js';

/**
 * What a module sees of the kernel it is loaded into. Everything here belongs to this boot only:
 * keep state across a kexec in KHO-preserved memory, never in module variables — the next kernel
 * imports every module afresh in a new worker.
 */
export interface ModuleContext {
  /** The module's own name. */
  readonly name: string;
  /** The running kernel's version string. */
  readonly kernelVersion: string;
  readonly cmdline: CommandLine;
  readonly log: KernelLog;
  /**
   * RAM, restricted to frames this kernel owns: allocated through {@link pages}, or restored
   * through {@link kho}. Anything else (free frames, another handler's preserved frames not
   * restored yet, firmware) is `EFAULT`. Restore a preserved folio before reading it.
   */
  readonly memory: ModuleMemory;
  readonly pages: PageAllocator;
  readonly kho: KexecHandover;
  readonly vfs: Vfs;
  readonly syscalls: SyscallTable;
  readonly rebootNotifiers: RebootNotifierChain;
  /**
   * The kernel loaded with `kexec_load` (its version and what it says it reads), and the checks
   * `reboot(LINUX_REBOOT_CMD_KEXEC)` runs before anything irreversible.
   */
  readonly kexec: KexecControl;
  /**
   * Services modules share within this boot: a module that offers one (LUO's handler registry)
   * provides it in its `init`; modules after it in the image get it. Keys are symbols the
   * providing package exports.
   */
  readonly services: ModuleServices;
  /** Halt the machine with `reason`. Never returns. */
  panic(reason: string): never;
}

/** A typed key for {@link ModuleServices}: a symbol carrying the service's type. */
export type ServiceKey<T> = symbol & { readonly __service?: T };

/** See {@link ModuleContext.services}. */
export interface ModuleServices {
  /** Offer `value` under `key` to the modules initialized later. `EEXIST` if `key` is taken. */
  provide<T>(key: ServiceKey<T>, value: T): void;
  /** The service under `key`, or `undefined` when no module provides it. */
  get<T>(key: ServiceKey<T>): T | undefined;
}

/**
 * A loadable kernel module: the default export of a package listed in a kernel image's `modules`.
 * `init` runs at boot, in the image's order (a throw is logged and the module is left out, as a
 * failing `module_init` is); `exit` runs on `delete_module`, and a module without one cannot be
 * unloaded (`EBUSY`).
 */
export interface KernelModule {
  readonly name: string;
  /**
   * The handover formats (compatible strings) this module can read after a live update: every
   * format its file handlers and FLBs take. The kernel publishes them as a note of its image, so a
   * kernel that `kexec_load`s this one knows, before its blackout, what this one can read (see
   * `handoverReads` of `@liveupdate/core`). A format left out here makes every live update that
   * would carry it to this kernel fail before the blackout. Default none.
   */
  readonly reads?: readonly string[];
  init(ctx: ModuleContext): void | Promise<void>;
  exit?(ctx: ModuleContext): void | Promise<void>;
  /**
   * The module's part in the rehearsal of a live update that a kernel image with `rehearse` runs
   * when it is loaded (see `createKernelImage`). Default none.
   */
  readonly rehearse?: ModuleRehearsal;
}

/**
 * What a module does in a rehearsal: a live update between two private kernels of the image
 * being loaded, on private RAM, in the worker that will run the real kernel, before it boots. It
 * runs the code paths of a live update once, so that the real one does not run them for the first
 * time inside its blackout. Nothing of it reaches the machine: not its RAM, devices, log or
 * timeline.
 *
 * Use what a process would, the syscalls of `process` and nothing else; keep no state between the
 * two halves but what the kernel preserves (session names and tokens are constants). A throw ends
 * the rehearsal: the kernel logs it as a warning when it boots and boots as it would without one.
 */
export interface ModuleRehearsal {
  /** In the first private kernel, before its kexec: preserve what a service would. */
  before(process: Process): Promise<void>;
  /** In the second private kernel, after the kexec: retrieve and use it, then finish. */
  after(process: Process): Promise<void>;
}

const MODULE_NAME = /^[A-Za-z0-9_-]{1,55}$/;

/**
 * Declare a module (the kernel's `module_init`/`module_exit`), checked at once so a mistake shows
 * where it was made.
 *
 * @example
 * ```ts
 * export default defineModule({
 *   name: 'hello',
 *   init(ctx) {
 *     ctx.log.info('hello: loaded');
 *   },
 * });
 * ```
 */
export function defineModule<M extends KernelModule>(module: M): M {
  if (typeof module !== 'object' || module === null) {
    throw new TypeError('defineModule: expected an object { name, init, exit? }');
  }
  if (typeof module.name !== 'string' || !MODULE_NAME.test(module.name)) {
    throw new TypeError(
      `defineModule: name must be 1-55 characters of [A-Za-z0-9_-], got ${JSON.stringify(module.name)}`,
    );
  }
  if (typeof module.init !== 'function') {
    throw new TypeError(
      `defineModule(${module.name}): init must be a function, got ${typeof module.init}`,
    );
  }
  if (
    module.reads !== undefined &&
    (!Array.isArray(module.reads) ||
      !module.reads.every(
        (c: unknown) => typeof c === 'string' && c.length > 0 && !c.includes('\0'),
      ))
  ) {
    throw new TypeError(
      `defineModule(${module.name}): reads must be an array of non-empty compatible strings`,
    );
  }
  if (
    module.rehearse !== undefined &&
    (typeof module.rehearse !== 'object' ||
      module.rehearse === null ||
      typeof module.rehearse.before !== 'function' ||
      typeof module.rehearse.after !== 'function')
  ) {
    throw new TypeError(
      `defineModule(${module.name}): rehearse must be an object { before, after } of functions`,
    );
  }
  if (module.exit !== undefined && typeof module.exit !== 'function') {
    throw new TypeError(`defineModule(${module.name}): exit must be a function when given`);
  }
  return module;
}

/** Whether `value` looks like a {@link defineModule} result (used on a module's default export). */
export function isKernelModule(value: unknown): value is KernelModule {
  if (typeof value !== 'object' || value === null) return false;
  const m = value as Partial<KernelModule>;
  return typeof m.name === 'string' && MODULE_NAME.test(m.name) && typeof m.init === 'function';
}
