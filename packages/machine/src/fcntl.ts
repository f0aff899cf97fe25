/**
 * File flags and commands of the Linux uAPI (`<fcntl.h>`, `<unistd.h>`), x86-64 values. Shared by
 * userspace (the {@link Process} wrappers) and the kernel, so both sides agree on the bits.
 */
export const O_RDONLY = 0o0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_ACCMODE = 0o3;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

/** `fcntl` commands. */
export const F_DUPFD = 0;
export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const F_DUPFD_CLOEXEC = 1030;
/** The only fd flag: close on exec. */
export const FD_CLOEXEC = 1;

/** `lseek` whence values. */
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;
