import { KernelError } from '@liveupdate/machine';
import { KernelPanic, type KernelLog } from '@liveupdate/kernel';
import type { FaultInjector, HandlerOp } from './fault-injector.js';
import type { FileHandler } from './file-handler.js';
import type { FlbOp, LiveUpdateFlb } from './liveupdate-flb.js';

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
  return guard(context, handler.compatible, op, async () => {
    const injector = context.faultInjector;
    if (injector) await injector.beforeCall(handler, op);
    return call();
  });
}

/**
 * {@link callHandler} for an FLB op (`preserve`, `retrieve`): the same error handling, and the
 * fault injector's `beforeFlbCall` asked first.
 */
export function callFlb<T>(
  context: HandlerCallContext,
  flb: LiveUpdateFlb,
  op: FlbOp,
  call: () => T | Promise<T>,
): Promise<T> {
  return guard(context, `FLB ${flb.compatible}`, op, async () => {
    await context.faultInjector?.beforeFlbCall?.(flb, op);
    return call();
  });
}

/** {@link callVoidHandler} for an FLB op that returns nothing (`unpreserve`, `finish`). */
export async function callVoidFlb(
  context: HandlerCallContext,
  flb: LiveUpdateFlb,
  op: FlbOp,
  call: () => unknown,
): Promise<void> {
  try {
    await context.faultInjector?.beforeFlbCall?.(flb, op);
    await call();
  } catch (error) {
    if (KernelPanic.isInstance(error)) throw error;
    context.log.warn(`LUO: FLB ${flb.compatible}: ${op} threw ${describe(error)}; continuing`);
  }
}

async function guard<T>(
  context: HandlerCallContext,
  who: string,
  op: string,
  call: () => T | Promise<T>,
): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (KernelPanic.isInstance(error) || KernelError.isInstance(error)) throw error;
    context.log.err(`LUO: ${who}: ${op} threw ${describe(error)}`);
    throw new KernelError(
      'EIO',
      `${who}: ${op} failed: ${(error as Error)?.message ?? String(error)}`,
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
