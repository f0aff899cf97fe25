import {
  AF_INET,
  AF_UNIX,
  INADDR_LOOPBACK,
  IPPROTO_TCP,
  KernelError,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  SCM_MAX_FD,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOMAXCONN,
  UNIX_PATH_MAX,
  type Sockaddr,
} from '@liveupdate/machine';
import {
  InetSocket,
  inetSocketFile,
  inetSocketFromFile,
  inetStreamOperations,
} from '../net/inet-socket.js';
import {
  nonblocking,
  UnixSocket,
  unixSocketFile,
  unixSocketFromFile,
  unixStreamOperations,
} from '../net/unix-socket.js';
import type { KernelProcess } from '../process-table.js';
import type { File } from '../vfs/file.js';
import type { Vfs } from '../vfs/vfs.js';
import { argBytes, argFd, argInt, argUint } from './syscall-args.js';
import type { SyscallTable } from './syscall-table.js';

/** `SOCK_TYPE_MASK`: the type bits of `socket`'s `type`; the rest are flags. */
const SOCK_TYPE_MASK = 0xf;
/** `SOCK_MAX`: types at or above it are `EINVAL`, those below that unix sockets lack `ESOCKTNOSUPPORT`. */
const SOCK_MAX = 11;
const SOCK_FLAGS = SOCK_CLOEXEC | SOCK_NONBLOCK;
const SENDMSG_FLAGS = MSG_DONTWAIT | MSG_NOSIGNAL;
const RECVMSG_FLAGS = MSG_DONTWAIT | MSG_CMSG_CLOEXEC;

const utf8 = new TextEncoder();

/**
 * Register the stream socket syscalls, `AF_UNIX` and `AF_INET` (TCP on loopback): socket,
 * socketpair, bind, getsockname, listen, connect, accept4, sendmsg, recvmsg, shutdown, and unlink
 * for the nodes a unix `bind` makes. A call on a socket of either family goes to its class.
 */
export function registerSocketSyscalls(table: SyscallTable, vfs: Vfs): void {
  const socketOf = (process: KernelProcess, fd: unknown): { file: File; socket: UnixSocket } => {
    const file = process.files.get(argFd(fd));
    return { file, socket: unixSocketFromFile(file) };
  };

  /** The socket behind `fd`, of either family; `ENOTSOCK` when it is no socket. */
  const anySocketOf = (
    process: KernelProcess,
    fd: unknown,
  ):
    | { file: File; unix: UnixSocket; inet?: never }
    | { file: File; inet: InetSocket; unix?: never } => {
    const file = process.files.get(argFd(fd));
    if (file.fops === inetStreamOperations) return { file, inet: inetSocketFromFile(file) };
    return { file, unix: unixSocketFromFile(file) };
  };

  /** Install the files `make` gives; the fds are taken first, so `EMFILE` makes nothing. */
  const installSockets = (
    process: KernelProcess,
    count: number,
    flags: number,
    make: () => File[],
  ): number[] => {
    const fds: number[] = [];
    try {
      for (let i = 0; i < count; i++) fds.push(process.files.reserve((flags & SOCK_CLOEXEC) !== 0));
    } catch (error) {
      for (const fd of fds) process.files.unreserve(fd);
      throw error;
    }
    make().forEach((file, i) => process.files.fill(fds[i]!, file));
    return fds;
  };

  table.register('socket', (ctx, domain, type, protocol) => {
    const { family, flags } = socketType(domain, type, protocol);
    const make = (): File[] =>
      family === AF_INET
        ? [inetSocketFile(vfs, new InetSocket(), flags)]
        : [unixSocketFile(vfs, new UnixSocket(vfs), flags)];
    return installSockets(ctx.process, 1, flags, make)[0];
  });

  table.register('socketpair', (ctx, domain, type, protocol) => {
    const { family, flags } = socketType(domain, type, protocol);
    if (family === AF_INET) {
      throw new KernelError('EOPNOTSUPP', 'socketpair: TCP sockets do not come in pairs');
    }
    return installSockets(ctx.process, 2, flags, () =>
      UnixSocket.pair(vfs).map((socket) => unixSocketFile(vfs, socket, flags)),
    );
  });

  table.register('bind', async (ctx, fd, address) => {
    const { unix: socket, inet } = anySocketOf(ctx.process, fd);
    if (inet) {
      await inet.bind(inetPort(address));
      return 0;
    }
    const name = socketPath(address);
    if (socket.address !== null) {
      throw new KernelError('EINVAL', `bind: the socket is bound to ${socket.address} already`);
    }
    vfs.mknodSocket(name, socket);
    socket.address = name;
    return 0;
  });

  table.register('getsockname', (ctx, fd): Sockaddr => {
    const { unix, inet } = anySocketOf(ctx.process, fd);
    if (inet) return inet.name;
    return { family: AF_UNIX, path: unix.address ?? '' };
  });

  table.register('listen', async (ctx, fd, backlog) => {
    const { unix, inet } = anySocketOf(ctx.process, fd);
    // The kernel takes backlog as an int and compares it unsigned: a negative one is SOMAXCONN.
    const value = argInt(backlog, 'backlog');
    const size = value < 0 ? SOMAXCONN : value;
    if (inet) await inet.listen(size);
    else unix.listen(size);
    return 0;
  });

  table.register('connect', async (ctx, fd, path) => {
    if (anySocketOf(ctx.process, fd).inet) {
      throw new KernelError('EOPNOTSUPP', 'connect: TCP sockets here take connections only');
    }
    const { file, socket } = socketOf(ctx.process, fd);
    const name = socketPath(path);
    const target = vfs.lookupSocket(name);
    if (target === undefined) throw new KernelError('ENOENT', `connect: ${name}: no such file`);
    if (!(target instanceof UnixSocket)) {
      throw new KernelError('ECONNREFUSED', `connect: ${name} is not a socket`);
    }
    await socket.connect(target, nonblocking(file), ctx.process.exiting);
    return 0;
  });

  table.register('accept4', async (ctx, fd, flags) => {
    const { file, unix, inet } = anySocketOf(ctx.process, fd);
    const how = argUint(flags ?? 0, 'flags');
    if ((how & ~SOCK_FLAGS) !== 0) {
      throw new KernelError('EINVAL', `accept4: unknown flags 0x${how.toString(16)}`);
    }
    // The fd first (get_unused_fd_flags): EMFILE takes no connection off the backlog.
    const newFd = ctx.process.files.reserve((how & SOCK_CLOEXEC) !== 0);
    try {
      const nonblock = nonblocking(file);
      const abort = ctx.process.exiting;
      const accepted = inet
        ? inetSocketFile(vfs, await inet.accept(nonblock, abort), how)
        : unixSocketFile(vfs, await unix.accept(nonblock, abort), how);
      ctx.process.files.fill(newFd, accepted);
      return newFd;
    } catch (error) {
      ctx.process.files.unreserve(newFd);
      throw error;
    }
  });

  table.register('sendmsg', async (ctx, fd, data, rights, flags) => {
    const { file, unix, inet } = anySocketOf(ctx.process, fd);
    const bytes = argBytes(data, 'buffer');
    const how = argUint(flags ?? 0, 'flags');
    if ((how & ~SENDMSG_FLAGS) !== 0) {
      throw new KernelError('EOPNOTSUPP', `sendmsg: flags 0x${how.toString(16)} are not supported`);
    }
    const nonblock = nonblocking(file) || (how & MSG_DONTWAIT) !== 0;
    if (inet) {
      // Linux's AF_INET has no SCM_RIGHTS: the control message is refused.
      if (!Array.isArray(rights) || rights.length > 0) {
        throw new KernelError('EOPNOTSUPP', 'sendmsg: SCM_RIGHTS needs an AF_UNIX socket');
      }
      return inet.send(bytes, nonblock, ctx.process.exiting);
    }
    const files = rightsFiles(ctx.process, rights ?? []);
    return unix.send(
      bytes,
      files.map((right) => vfs.fget(right)),
      nonblock,
      ctx.process.exiting,
    );
  });

  table.register('recvmsg', async (ctx, fd, count, maxRights, flags) => {
    const { file, unix: socket, inet } = anySocketOf(ctx.process, fd);
    const n = argUint(count, 'count');
    const room = argUint(maxRights ?? SCM_MAX_FD, 'maxRights');
    const how = argUint(flags ?? 0, 'flags');
    if ((how & ~RECVMSG_FLAGS) !== 0) {
      throw new KernelError('EOPNOTSUPP', `recvmsg: flags 0x${how.toString(16)} are not supported`);
    }
    const nonblock = nonblocking(file) || (how & MSG_DONTWAIT) !== 0;
    if (inet) {
      return { data: await inet.receive(n, nonblock, ctx.process.exiting), rights: [], flags: 0 };
    }
    const received = await socket.receive(n, nonblock, ctx.process.exiting);
    const files = received.rights ?? [];
    const fds: number[] = [];
    let taken = 0;
    // scm_detach_fds: as many as fit in the caller's room and fd table; the rest are closed.
    for (; taken < Math.min(room, files.length); taken++) {
      let fd: number;
      try {
        fd = ctx.process.files.reserve((how & MSG_CMSG_CLOEXEC) !== 0);
      } catch {
        break;
      }
      ctx.process.files.fill(fd, files[taken]!);
      fds.push(fd);
    }
    await socket.releaseFiles(files.slice(taken));
    return {
      data: received.data,
      rights: fds,
      flags: taken < files.length ? MSG_CTRUNC : 0,
    };
  });

  table.register('shutdown', (ctx, fd, how) => {
    const { unix, inet } = anySocketOf(ctx.process, fd);
    (inet ?? unix).shutdown(argUint(how, 'how'));
    return 0;
  });

  table.register('unlink', (_ctx, path) => {
    vfs.unlink(socketPath(path));
    return 0;
  });
}

/**
 * Check `socket`/`socketpair`'s arguments in Linux's order and return the family and the flags
 * of `type`: unknown flags `EINVAL`; a family other than `AF_UNIX` and `AF_INET`
 * `EAFNOSUPPORT`; a type out of range `EINVAL`. `AF_INET` (inet_create): only `SOCK_STREAM` with
 * protocol 0 or `IPPROTO_TCP`, else `EPROTONOSUPPORT` (this kernel has no UDP or raw sockets).
 * `AF_UNIX`: a protocol other than 0 (or `AF_UNIX`) `EPROTONOSUPPORT`; a type other than
 * `SOCK_STREAM` `ESOCKTNOSUPPORT` (this kernel has no datagram unix sockets).
 */
function socketType(
  domain: unknown,
  type: unknown,
  protocol: unknown,
): { family: typeof AF_UNIX | typeof AF_INET; flags: number } {
  const family = argInt(domain, 'domain');
  const value = argInt(type, 'type');
  const proto = argInt(protocol ?? 0, 'protocol');
  const flags = value & ~SOCK_TYPE_MASK;
  if (value < 0 || (flags & ~SOCK_FLAGS) !== 0) {
    throw new KernelError('EINVAL', `socket: unknown type flags 0x${(value >>> 0).toString(16)}`);
  }
  if (family !== AF_UNIX && family !== AF_INET) {
    throw new KernelError('EAFNOSUPPORT', `socket: address family ${family} is not supported`);
  }
  const kind = value & SOCK_TYPE_MASK;
  if (kind >= SOCK_MAX) throw new KernelError('EINVAL', `socket: bad type ${kind}`);
  if (family === AF_INET) {
    if (kind !== SOCK_STREAM || (proto !== 0 && proto !== IPPROTO_TCP)) {
      throw new KernelError(
        'EPROTONOSUPPORT',
        `socket: AF_INET type ${kind} protocol ${proto} is not supported (TCP only)`,
      );
    }
    return { family, flags };
  }
  if (proto !== 0 && proto !== AF_UNIX) {
    throw new KernelError('EPROTONOSUPPORT', `socket: protocol ${proto} is not supported`);
  }
  if (kind !== SOCK_STREAM) {
    throw new KernelError('ESOCKTNOSUPPORT', `socket: type ${kind} is not supported for AF_UNIX`);
  }
  return { family, flags };
}

/**
 * The port of a `sockaddr_in` for `bind` (inet_bind's checks, in its order): an object (else
 * `EINVAL`: too short for a `sockaddr_in`) of family `AF_INET` (else `EAFNOSUPPORT`), address
 * 127.0.0.1 (else `EADDRNOTAVAIL`: the machine's one interface is loopback, and `INADDR_ANY`
 * would open the port to the host's network) and a port of 0 to 65535 (else `EINVAL`: it does
 * not fit `sin_port`).
 */
function inetPort(value: unknown): number {
  if (typeof value !== 'object' || value === null) {
    throw new KernelError('EINVAL', 'bind: the address of an AF_INET socket is a sockaddr_in');
  }
  const { family, address, port } = value as Record<string, unknown>;
  if (family !== AF_INET) {
    throw new KernelError(
      'EAFNOSUPPORT',
      `bind: sockaddr_in family ${String(family)}, want AF_INET`,
    );
  }
  if (address !== INADDR_LOOPBACK) {
    throw new KernelError(
      'EADDRNOTAVAIL',
      `bind: sockaddr_in address ${String(address)}, only ${INADDR_LOOPBACK} is local`,
    );
  }
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new KernelError('EINVAL', `bind: sockaddr_in port ${String(port)}, want 0 to 65535`);
  }
  return port;
}

/**
 * A `sun_path`: a string (else `EFAULT`) of 1 to 107 UTF-8 bytes (else `EINVAL`: it and its NUL
 * must fit in `sockaddr_un`) without NUL (abstract names are not supported: `EINVAL`). Every
 * process's working directory is `/`, so a relative name is taken from there.
 */
function socketPath(value: unknown): string {
  if (typeof value !== 'string') throw new KernelError('EFAULT', 'socket address is not a string');
  const length = utf8.encode(value).length;
  if (length === 0 || length >= UNIX_PATH_MAX) {
    throw new KernelError(
      'EINVAL',
      `socket path of ${length} bytes, want 1 to ${UNIX_PATH_MAX - 1}`,
    );
  }
  if (value.includes('\0')) {
    throw new KernelError('EINVAL', 'abstract socket names (a NUL in sun_path) are not supported');
  }
  return value.startsWith('/') ? value : `/${value}`;
}

/**
 * The files of `SCM_RIGHTS` fds: an array (else `EFAULT`) of at most `SCM_MAX_FD` (else `EINVAL`)
 * open fds (else `EBADF`). A unix socket cannot travel (`EOPNOTSUPP`): with no garbage collector
 * for files in flight, a socket sent over itself would never be released.
 */
function rightsFiles(process: KernelProcess, rights: unknown): File[] {
  if (!Array.isArray(rights)) throw new KernelError('EFAULT', 'SCM_RIGHTS is not an fd array');
  if (rights.length > SCM_MAX_FD) {
    throw new KernelError('EINVAL', `SCM_RIGHTS of ${rights.length} fds, at most ${SCM_MAX_FD}`);
  }
  return rights.map((fd) => {
    const file = process.files.get(argFd(fd));
    if (file.fops === unixStreamOperations) {
      throw new KernelError('EOPNOTSUPP', `SCM_RIGHTS: fd ${String(fd)} is a unix socket`);
    }
    return file;
  });
}
