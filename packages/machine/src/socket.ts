import { O_CLOEXEC, O_NONBLOCK } from './fcntl.js';

/**
 * Socket constants of the Linux uAPI (`<sys/socket.h>`, `<sys/un.h>`), x86-64 values. Shared by
 * userspace (the {@link Process} socket wrappers) and the kernel. `AF_UNIX` `SOCK_STREAM` sockets
 * and `AF_INET` `SOCK_STREAM` (TCP) sockets on loopback exist on this machine.
 */

/** Address families: the kernel serves `AF_UNIX` (also `AF_LOCAL`) and `AF_INET` on loopback. */
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;

/**
 * Socket types. Only `SOCK_STREAM` is served; the others fail with `ESOCKTNOSUPPORT` (`AF_UNIX`)
 * or `EPROTONOSUPPORT` (`AF_INET`, whose protocol 0 names no protocol for them here).
 */
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

/** `INADDR_ANY`: what `getsockname` reports for an `AF_INET` socket not bound yet. */
export const INADDR_ANY = '0.0.0.0';
/** `INADDR_LOOPBACK`: the one address `AF_INET` sockets bind to on this machine. */
export const INADDR_LOOPBACK = '127.0.0.1';
/** `IPPROTO_TCP`: the protocol of `AF_INET` `SOCK_STREAM`, also given as 0. */
export const IPPROTO_TCP = 6;

/**
 * `struct sockaddr_in`: an `AF_INET` address, the dotted quad and the port (host order here: no
 * `htons`, the kernel keeps the byte order to itself).
 */
export interface SockaddrIn {
  readonly family: typeof AF_INET;
  readonly address: string;
  readonly port: number;
}

/** `struct sockaddr_un`: an `AF_UNIX` address, the path; empty when the socket is unnamed. */
export interface SockaddrUn {
  readonly family: typeof AF_UNIX;
  readonly path: string;
}

/** What `getsockname` returns: the address of a socket of either family. */
export type Sockaddr = SockaddrIn | SockaddrUn;
