import { KernelError } from '@liveupdate/machine';

/**
 * `attempt(what, op)`: run `op`; when it fails with an errno, record `what: ERRNO` in `failed`
 * and resolve `undefined`. Anything else is not the kernel's answer and is rethrown.
 */
export function attempter(
  failed: string[],
): <T>(what: string, op: () => Promise<T>) => Promise<T | undefined> {
  return async (what, op) => {
    try {
      return await op();
    } catch (error) {
      if (!KernelError.isInstance(error)) throw error;
      failed.push(`${what}: ${error.code}`);
      return undefined;
    }
  };
}
