/**
 * Linux errno numbers (x86-64 / arm64 generic values), by name. One table for the whole project:
 * kernel code throws {@link KernelError} with a name from here and userspace sees the same number
 * the Linux kernel would return. Deliberately not the host's `os.constants.errno`.
 */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EPIPE: 32,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENODATA: 61,
  EOVERFLOW: 75,
  EBADFD: 77,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  EPROTONOSUPPORT: 93,
  ESOCKTNOSUPPORT: 94,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ECONNRESET: 104,
  EISCONN: 106,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
} as const;

/** An errno name such as `'EBUSY'`. */
export type ErrnoName = keyof typeof ERRNO;

/** Whether `name` is an errno name of {@link ERRNO}. */
export function isErrnoName(name: unknown): name is ErrnoName {
  return typeof name === 'string' && Object.prototype.hasOwnProperty.call(ERRNO, name);
}
