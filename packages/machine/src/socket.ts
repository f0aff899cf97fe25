import { O_CLOEXEC, O_NONBLOCK } from './fcntl.js';

/**
 * Socket constants of the Linux uAPI (`<sys/socket.h>`, `<sys/un.h>`), x86-64 values. Shared by
 * userspace (the {@link Process} socket wrappers) and the kernel. Only `AF_UNIX` `SOCK_STREAM`
 * sockets exist on this machine.
 */

/** Address families: `AF_UNIX` (also `AF_LOCAL`) is the only one the kernel serves. */
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;

/** Socket types. Only `SOCK_STREAM` is served; the others fail with `ESOCKTNOSUPPORT`. */
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_SEQPACKET = 5;
/** Flags or-ed into the type of `socket`/`socketpair`, and the flags of `accept4`. */
export const SOCK_NONBLOCK = O_NONBLOCK;
export const SOCK_CLOEXEC = O_CLOEXEC;

/** `recvmsg` result flag: the receiver's room for fds was short; the fds that did not fit are closed. */
export const MSG_CTRUNC = 0x8;
/** `sendmsg`/`recvmsg` flag: this call does not wait, as if the file were `O_NONBLOCK`. */
export const MSG_DONTWAIT = 0x40;
/** `sendmsg` flag: no `SIGPIPE` (this machine has no signals; accepted for portability). */
export const MSG_NOSIGNAL = 0x4000;
/** `recvmsg` flag: the fds received get `FD_CLOEXEC`. */
export const MSG_CMSG_CLOEXEC = 0x40000000;

/** `SCM_MAX_FD`: the most fds one `SCM_RIGHTS` message may carry. */
export const SCM_MAX_FD = 253;
/** `SOMAXCONN`: the largest `listen` backlog; a larger one (or a negative one) is cut to it. */
export const SOMAXCONN = 4096;
/** `sizeof(sun_path)`: a filesystem name holds at most 107 bytes and its NUL. */
export const UNIX_PATH_MAX = 108;

/** `shutdown` directions. */
export const SHUT_RD = 0;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;
