import { KernelError } from '@liveupdate/machine';
import { KernelPanic, type KernelLog } from '@liveupdate/kernel';
import type { FaultInjector, HandlerOp } from './fault-injector.js';
import type { FileHandler } from './file-handler.js';

/** What every handler call needs from the orchestrator. */
export interface HandlerCallContext {
  readonly log: KernelLog;
  /** Asked before each call when set; see {@link FaultInjector}. */
  readonly faultInjector: FaultInjector | undefined;
}

/**
 * Every call into a handler goes through here. A `KernelError` keeps its errno all the way to
 * userspace; any other throw becomes `EIO`, with the cause in the kernel log. A kernel panic is
 * never caught. An installed fault injector is asked first, inside the same error handling.
 */
export async function callHandler<T>(
  context: HandlerCallContext,
  handler: FileHandler,
  op: HandlerOp,
  call: () => T | Promise<T>,
): Promise<T> {
  try {
    const injector = context.faultInjector;
    if (injector) await injector.beforeCall(handler, op);
    return await call();
  } catch (error) {
    if (KernelPanic.isInstance(error) || KernelError.isInstance(error)) throw error;
    context.log.err(`LUO: ${handler.compatible}: ${op} threw ${describe(error)}`);
    throw new KernelError(
      'EIO',
      `${handler.compatible}: ${op} failed: ${(error as Error)?.message ?? String(error)}`,
      {
        cause: error,
      },
    );
  }
}

/**
 * For the ops that return nothing in the kernel (`unpreserve`, `unfreeze`, `finish`): a throw is
 * logged and LUO carries on, so a broken handler cannot stop a session from closing.
 */
export async function callVoidHandler(
  context: HandlerCallContext,
  handler: FileHandler,
  op: HandlerOp,
  call: () => unknown,
): Promise<void> {
  try {
    const injector = context.faultInjector;
    if (injector) await injector.beforeCall(handler, op);
    await call();
  } catch (error) {
    if (KernelPanic.isInstance(error)) throw error;
    context.log.warn(`LUO: ${handler.compatible}: ${op} threw ${describe(error)}; continuing`);
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.stack ?? `${error.name}: ${error.message}`;
  return String(error);
}
