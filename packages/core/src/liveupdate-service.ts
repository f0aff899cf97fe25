import type { ModuleContext, ServiceKey } from '@liveupdate/kernel';
import { KernelError } from '@liveupdate/machine';
import { handlerReads, type FileHandler } from './file-handler.js';
import type { LiveUpdateFlb } from './liveupdate-flb.js';
import type { LiveUpdateOrchestrator } from './live-update-orchestrator.js';

/** The key under which the `liveupdate` module provides this boot's orchestrator. */
export const LIVEUPDATE_SERVICE: ServiceKey<LiveUpdateOrchestrator> = Symbol.for(
  'liveupdate.LiveUpdateOrchestrator',
);

function orchestrator(ctx: ModuleContext): LiveUpdateOrchestrator {
  const luo = ctx.services.get(LIVEUPDATE_SERVICE);
  if (!luo?.enabled) {
    throw new KernelError(
      'EOPNOTSUPP',
      luo
        ? 'LUO is disabled (boot with liveupdate=on kho=on)'
        : 'LUO is not loaded (list @liveupdate/core/module before this module in the kernel image)',
    );
  }
  return luo;
}

/**
 * `liveupdate_register_file_handler()`: make `handler` available to `PRESERVE_FD` and to the
 * files of incoming sessions. Call it from a module's `init`, after the `liveupdate` module in
 * the image. Throws `EOPNOTSUPP` when LUO is disabled or absent (a handler module usually ignores
 * that, as upstream's memfd does), `EINVAL` for a malformed handler, `EEXIST` for a duplicate
 * `compatible`.
 */
export function registerFileHandler(ctx: ModuleContext, handler: FileHandler): void {
  orchestrator(ctx).registry.register(handler);
  warnUndeclared(ctx, handler.compatible, handlerReads(handler));
}

/** Log formats this kernel's image does not say it reads: updates into it would be refused. */
function warnUndeclared(ctx: ModuleContext, what: string, formats: readonly string[]): void {
  const missing = formats.filter((format) => !ctx.kexec.self().reads.has(format));
  if (missing.length === 0) return;
  ctx.log.warn(
    `LUO: ${what} reads ${missing.join(', ')}, which module ${ctx.name} does not list in its reads (see handoverReads): a live update into this kernel would be refused for such files`,
  );
}

/**
 * `liveupdate_unregister_file_handler()`: `EBUSY` while a live update is in progress (any
 * outgoing or incoming session exists), `ENOENT` when `handler` is not registered.
 */
export function unregisterFileHandler(ctx: ModuleContext, handler: FileHandler): void {
  const luo = orchestrator(ctx);
  if (luo.busy) throw new KernelError('EBUSY', 'LUO: sessions exist; a live update is in progress');
  if (luo.flbs.linked(handler)) {
    throw new KernelError('EBUSY', `LUO: file handler "${handler.compatible}" has FLBs linked`);
  }
  luo.registry.unregister(handler);
}

/**
 * `liveupdate_register_flb()`: link `flb` to `handler`, which must be registered already. Call it
 * from a module's `init`, in every kernel (the next kernel finds an incoming FLB by its
 * `compatible` only when it is registered there too). One FLB may be linked to several handlers;
 * see {@link LiveUpdateFlb} for its refcounts. Throws `EOPNOTSUPP` as {@link registerFileHandler},
 * `EBUSY` while a live update is in progress, `ENOENT` when `handler` is not registered, `EINVAL`
 * for a malformed FLB, `EEXIST` when it is linked to `handler` already or its `compatible` is
 * another FLB's, and `ENOSPC` past 63 FLBs (what one page of `luo_flb_ser` holds).
 */
export function registerFlb(ctx: ModuleContext, handler: FileHandler, flb: LiveUpdateFlb): void {
  const luo = orchestrator(ctx);
  if (luo.busy) throw new KernelError('EBUSY', 'LUO: sessions exist; a live update is in progress');
  if (!luo.registry.handlers.includes(handler)) {
    throw new KernelError(
      'ENOENT',
      `LUO: file handler "${String(handler?.compatible)}" is not registered; register it before its FLBs`,
    );
  }
  luo.flbs.register(handler, flb);
  warnUndeclared(ctx, `FLB ${flb.compatible}`, [flb.compatible]);
}

/**
 * `liveupdate_flb_get_outgoing()`: the object `flb`'s `preserve` set (`args.obj`), while at least
 * one file of a linked handler is preserved; `ENOENT` otherwise. Handlers call it from their ops
 * (a file's `preserve` runs after its FLBs' `preserve`).
 */
export function flbGetOutgoing(ctx: ModuleContext, flb: LiveUpdateFlb): unknown {
  return orchestrator(ctx).flbs.getOutgoing(flb);
}

/**
 * `liveupdate_flb_get_incoming()`: in the new kernel, the object `flb`'s `retrieve` set, calling
 * `retrieve` on first use. `ENOENT` when `flb` is not registered, the previous kernel handed
 * nothing over for it, or it has finished; a failed `retrieve`'s errno (the next call tries
 * again). Never call it for an FLB from inside that FLB's own ops: they hold its lock.
 */
export function flbGetIncoming(ctx: ModuleContext, flb: LiveUpdateFlb): Promise<unknown> {
  return orchestrator(ctx).flbs.getIncoming(flb);
}
