import { createRequire } from 'node:module';
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import { KernelError } from '@liveupdate/machine';
import { KernelPanic } from './kernel-panic.js';
import type { KernelLog } from './kernel-log.js';
import {
  isKernelModule,
  type KernelModule,
  type ModuleContext,
  type ModuleRehearsal,
} from './kernel-module.js';
import { handoverReadsNote, type KernelNote } from './kexec-notes.js';

/** Resolve a module specifier of a kernel image to a URL the worker can import. */
export function resolveModuleSpecifier(specifier: string, base: string): string {
  if (specifier.startsWith('file:')) return specifier;
  if (isAbsolute(specifier)) return pathToFileURL(specifier).href;
  if (specifier.startsWith('./') || specifier.startsWith('../'))
    return new URL(specifier, base).href;
  return pathToFileURL(createRequire(base).resolve(specifier)).href;
}

/**
 * Imports the image's modules when the worker starts (before boot, so a `kexec_load`ed kernel has
 * them ready), initializes them at boot and unloads them on `delete_module`.
 */
export class ModuleLoader {
  readonly #available: KernelModule[] = [];
  readonly #live = new Map<string, { module: KernelModule; ctx: ModuleContext }>();

  /** Import every module; throws an Error naming the module that failed. */
  async load(specifiers: readonly string[], base: string): Promise<void> {
    for (const specifier of specifiers) {
      let exported: unknown;
      try {
        exported = (
          (await import(resolveModuleSpecifier(specifier, base))) as { default?: unknown }
        ).default;
      } catch (error) {
        throw new Error(`module ${specifier}: ${(error as Error).message}`, { cause: error });
      }
      if (!isKernelModule(exported)) {
        throw new Error(`module ${specifier}: its default export is not a defineModule() result`);
      }
      if (this.#available.some((m) => m.name === exported.name)) {
        throw new Error(
          `module ${specifier}: a module named ${exported.name} is already in the image`,
        );
      }
      this.#available.push(exported);
    }
  }

  /** A `NT_HANDOVER_READS` note for each imported module that declares `reads`. */
  notes(): KernelNote[] {
    return this.#available
      .filter((m) => m.reads && m.reads.length > 0)
      .map((m) => handoverReadsNote(m.name, m.reads!));
  }

  /** Run every module's `init` in order. A failing init is logged and the module left out. */
  async initAll(
    contextFor: (module: KernelModule) => ModuleContext,
    log: KernelLog,
  ): Promise<void> {
    for (const module of this.#available) {
      const ctx = contextFor(module);
      try {
        await module.init(ctx);
        this.#live.set(module.name, { module, ctx });
      } catch (error) {
        if (KernelPanic.isInstance(error)) throw error;
        log.err(`${module.name}: module init failed: ${(error as Error).message}`);
      }
    }
  }

  /** Another loader of the same imported modules, none of them initialized (for a rehearsal). */
  copy(): ModuleLoader {
    const copy = new ModuleLoader();
    copy.#available.push(...this.#available);
    return copy;
  }

  /** The imported modules that take part in a rehearsal, in the image's order. */
  rehearsals(): { readonly name: string; readonly rehearse: ModuleRehearsal }[] {
    return this.#available.flatMap((m) =>
      m.rehearse ? [{ name: m.name, rehearse: m.rehearse }] : [],
    );
  }

  /** Names of the modules whose init succeeded and that are still loaded. */
  get loaded(): string[] {
    return [...this.#live.keys()];
  }

  /** `delete_module`: `ENOENT` if not loaded, `EBUSY` without `exit`; `exit`'s errno otherwise. */
  async unload(name: string): Promise<void> {
    const entry = this.#live.get(name);
    if (!entry) throw new KernelError('ENOENT', `module ${name} is not loaded`);
    if (!entry.module.exit)
      throw new KernelError('EBUSY', `module ${name} has no exit and cannot be unloaded`);
    try {
      await entry.module.exit(entry.ctx);
    } catch (error) {
      if (KernelError.isInstance(error) || KernelPanic.isInstance(error)) throw error;
      throw new KernelError('EIO', `module ${name}: exit failed: ${(error as Error).message}`, {
        cause: error,
      });
    }
    this.#live.delete(name);
  }
}
