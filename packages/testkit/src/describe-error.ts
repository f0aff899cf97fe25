import { inspect } from 'node:util';
import { KernelError } from '@liveupdate/machine';

/** An error as one line for a failure message: `EBUSY (what the kernel said)`, or `Name: message`. */
export function describeError(error: unknown): string {
  if (KernelError.isInstance(error)) {
    const prefix = `${error.code}: `;
    const message = error.message.startsWith(prefix)
      ? error.message.slice(prefix.length)
      : error.message;
    return `${error.code} (${message})`;
  }
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return inspect(error);
}
