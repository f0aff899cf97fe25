// How the agent turns what failed into an errno answer.
import { KernelError } from '@liveupdate/machine';

/** `error` as a KernelError; anything else is `EIO` with its message. */
export function asKernelError(error: unknown): KernelError {
  if (KernelError.isInstance(error)) return error;
  return new KernelError('EIO', error instanceof Error ? error.message : String(error));
}

/** A KernelError's message without its `CODE: ` prefix. */
export function messageOf(error: KernelError): string {
  const prefix = `${error.code}: `;
  return error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message;
}
