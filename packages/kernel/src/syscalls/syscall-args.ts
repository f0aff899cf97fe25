import { KernelError } from '@liveupdate/machine';

/**
 * Validation of syscall arguments, which come from userspace as they were passed. Each check
 * throws the errno Linux gives for that kind of bad argument.
 */

/** An fd: a non-negative integer, else `EBADF`. */
export function argFd(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new KernelError('EBADF', `bad file descriptor ${String(value)}`);
  }
  return value;
}

/** A non-negative safe integer (count, offset, flags), else `EINVAL`. */
export function argUint(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new KernelError('EINVAL', `${what} must be a non-negative integer, got ${String(value)}`);
  }
  return value;
}

/** An integer (possibly negative, like an lseek offset), else `EINVAL`. */
export function argInt(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new KernelError('EINVAL', `${what} must be an integer, got ${String(value)}`);
  }
  return value;
}

/** A user buffer, else `EFAULT` (a bad pointer). */
export function argBytes(value: unknown, what: string): Uint8Array {
  if (!(value instanceof Uint8Array))
    throw new KernelError('EFAULT', `${what} is not a byte buffer`);
  return value;
}

/** `PATH_MAX`, including the NUL. */
export const PATH_MAX = 4096;

const utf8 = new TextEncoder();

/**
 * A path string, else `EFAULT`; `ENAMETOOLONG` at `PATH_MAX` (4096) bytes or more, counted in
 * UTF-8 bytes as the kernel copies it; `ENOENT` when empty.
 */
export function argPath(value: unknown): string {
  if (typeof value !== 'string') throw new KernelError('EFAULT', 'path is not a string');
  // Every UTF-16 unit is at least one UTF-8 byte: a string that long needs no encoding to refuse.
  if (value.length >= PATH_MAX || utf8.encode(value).length >= PATH_MAX)
    throw new KernelError(
      'ENAMETOOLONG',
      `path of ${value.length} characters is ${PATH_MAX} bytes or more`,
    );
  if (value.length === 0) throw new KernelError('ENOENT', 'empty path');
  return value;
}
