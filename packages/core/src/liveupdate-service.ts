import type { ModuleContext, ServiceKey } from '@liveupdate/kernel';
import { KernelError } from '@liveupdate/machine';
import type { FileHandler } from './file-handler.js';
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
}

/**
 * `liveupdate_unregister_file_handler()`: `EBUSY` while a live update is in progress (any
 * outgoing or incoming session exists), `ENOENT` when `handler` is not registered.
 */
export function unregisterFileHandler(ctx: ModuleContext, handler: FileHandler): void {
  const luo = orchestrator(ctx);
  if (luo.busy) throw new KernelError('EBUSY', 'LUO: sessions exist; a live update is in progress');
  luo.registry.unregister(handler);
}
