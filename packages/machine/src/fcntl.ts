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

/** File seals (`F_ADD_SEALS`/`F_GET_SEALS`, `<linux/fcntl.h>`). */
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 0x0001;
export const F_SEAL_SHRINK = 0x0002;
export const F_SEAL_GROW = 0x0004;
export const F_SEAL_WRITE = 0x0008;
export const F_SEAL_FUTURE_WRITE = 0x0010;
export const F_SEAL_EXEC = 0x0020;

/** `memfd_create` flags (`<linux/memfd.h>`). */
export const MFD_CLOEXEC = 0x0001;
export const MFD_ALLOW_SEALING = 0x0002;
export const MFD_HUGETLB = 0x0004;

/**
 * `eventfd2` flags (`<sys/eventfd.h>`): `EFD_SEMAPHORE` makes each read take 1 from the counter
 * instead of all of it; `EFD_CLOEXEC` and `EFD_NONBLOCK` are `O_CLOEXEC` and `O_NONBLOCK`.
 */
export const EFD_SEMAPHORE = 1;
export const EFD_CLOEXEC = O_CLOEXEC;
export const EFD_NONBLOCK = O_NONBLOCK;

/** `fallocate` modes (`<linux/falloc.h>`). */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
