import { KernelError } from '@liveupdate/machine';
import { KernelPanic, type KernelLog } from '@liveupdate/kernel';
import type { FileHandler } from './file-handler.js';

/**
 * Every call into a handler goes through here. A `KernelError` keeps its errno all the way to
 * userspace; any other throw becomes `EIO`, with the cause in the kernel log. A kernel panic is
 * never caught.
 */
export async function callHandler<T>(
  log: KernelLog,
  handler: FileHandler,
  op: string,
  call: () => T | Promise<T>,
): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (KernelPanic.isInstance(error) || KernelError.isInstance(error)) throw error;
    log.err(`LUO: ${handler.compatible}: ${op} threw ${describe(error)}`);
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
  log: KernelLog,
  handler: FileHandler,
  op: string,
  call: () => unknown,
): Promise<void> {
  try {
    await call();
  } catch (error) {
    if (KernelPanic.isInstance(error)) throw error;
    log.warn(`LUO: ${handler.compatible}: ${op} threw ${describe(error)}; continuing`);
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.stack ?? `${error.name}: ${error.message}`;
  return String(error);
}
