import { KernelError } from '@liveupdate/machine';

/**
 * The errno name (`'EBUSY'`, …) a syscall or ioctl rejects with, or `undefined` when it resolves.
 * Any other error is rethrown, so a bug in the test is not mistaken for an errno.
 *
 * @example
 * ```ts
 * expect(await errnoOf(session.preserveFd(fd, 1n))).toBe('EEXIST');
 * ```
 */
export async function errnoOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    if (KernelError.isInstance(error)) return error.code;
    throw error;
  }
}
