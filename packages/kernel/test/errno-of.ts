import { KernelError } from '@liveupdate/machine';

/** The errno name `fn` throws, or `undefined` when it returns. Anything but a KernelError fails. */
export function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    if (KernelError.isInstance(error)) return error.code;
    throw error;
  }
  return undefined;
}
