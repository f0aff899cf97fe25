import {
  AF_UNIX,
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
} from '@liveupdate/machine';
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
 * Register the `AF_UNIX` `SOCK_STREAM` socket syscalls: socket, socketpair, bind, listen,
 * connect, accept4, sendmsg, recvmsg, shutdown, and unlink for the nodes `bind` makes.
 */
export function registerSocketSyscalls(table: SyscallTable, vfs: Vfs): void {
  const socketOf = (process: KernelProcess, fd: unknown): { file: File; socket: UnixSocket } => {
    const file = process.files.get(argFd(fd));
    return { file, socket: unixSocketFromFile(file) };
  };

  /** Install a new file for each of `sockets`; the fds are taken first, so `EMFILE` makes nothing. */
  const installSockets = (
    process: KernelProcess,
    sockets: readonly UnixSocket[],
    flags: number,
  ): number[] => {
    const fds: number[] = [];
    try {
      for (const _ of sockets) fds.push(process.files.reserve((flags & SOCK_CLOEXEC) !== 0));
    } catch (error) {
      for (const fd of fds) process.files.unreserve(fd);
      throw error;
    }
    sockets.forEach((socket, i) => process.files.fill(fds[i]!, unixSocketFile(vfs, socket, flags)));
    return fds;
  };

  table.register('socket', (ctx, domain, type, protocol) => {
    const flags = socketType(domain, type, protocol);
    return installSockets(ctx.process, [new UnixSocket(vfs)], flags)[0];
  });

  table.register('socketpair', (ctx, domain, type, protocol) => {
    const flags = socketType(domain, type, protocol);
    return installSockets(ctx.process, UnixSocket.pair(vfs), flags);
  });

  table.register('bind', (ctx, fd, path) => {
    const { socket } = socketOf(ctx.process, fd);
    const name = socketPath(path);
    if (socket.address !== null) {
      throw new KernelError('EINVAL', `bind: the socket is bound to ${socket.address} already`);
    }
    vfs.mknodSocket(name, socket);
    socket.address = name;
    return 0;
  });

  table.register('listen', (ctx, fd, backlog) => {
    const { socket } = socketOf(ctx.process, fd);
    // The kernel takes backlog as an int and compares it unsigned: a negative one is SOMAXCONN.
    const value = argInt(backlog, 'backlog');
    socket.listen(value < 0 ? SOMAXCONN : value);
    return 0;
  });

  table.register('connect', async (ctx, fd, path) => {
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
    const { file, socket } = socketOf(ctx.process, fd);
    const how = argUint(flags ?? 0, 'flags');
    if ((how & ~SOCK_FLAGS) !== 0) {
      throw new KernelError('EINVAL', `accept4: unknown flags 0x${how.toString(16)}`);
    }
    // The fd first (get_unused_fd_flags): EMFILE takes no connection off the backlog.
    const newFd = ctx.process.files.reserve((how & SOCK_CLOEXEC) !== 0);
    try {
      const server = await socket.accept(nonblocking(file), ctx.process.exiting);
      ctx.process.files.fill(newFd, unixSocketFile(vfs, server, how));
      return newFd;
    } catch (error) {
      ctx.process.files.unreserve(newFd);
      throw error;
    }
  });

  table.register('sendmsg', async (ctx, fd, data, rights, flags) => {
    const { file, socket } = socketOf(ctx.process, fd);
    const bytes = argBytes(data, 'buffer');
    const how = argUint(flags ?? 0, 'flags');
    if ((how & ~SENDMSG_FLAGS) !== 0) {
      throw new KernelError('EOPNOTSUPP', `sendmsg: flags 0x${how.toString(16)} are not supported`);
    }
    const files = rightsFiles(ctx.process, rights ?? []);
    return socket.send(
      bytes,
      files.map((right) => vfs.fget(right)),
      nonblocking(file) || (how & MSG_DONTWAIT) !== 0,
      ctx.process.exiting,
    );
  });

  table.register('recvmsg', async (ctx, fd, count, maxRights, flags) => {
    const { file, socket } = socketOf(ctx.process, fd);
    const n = argUint(count, 'count');
    const room = argUint(maxRights ?? SCM_MAX_FD, 'maxRights');
    const how = argUint(flags ?? 0, 'flags');
    if ((how & ~RECVMSG_FLAGS) !== 0) {
      throw new KernelError('EOPNOTSUPP', `recvmsg: flags 0x${how.toString(16)} are not supported`);
    }
    const received = await socket.receive(
      n,
      nonblocking(file) || (how & MSG_DONTWAIT) !== 0,
      ctx.process.exiting,
    );
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
    socketOf(ctx.process, fd).socket.shutdown(argUint(how, 'how'));
    return 0;
  });

  table.register('unlink', (_ctx, path) => {
    vfs.unlink(socketPath(path));
    return 0;
  });
}

/**
 * Check `socket`/`socketpair`'s arguments in Linux's order and return the flags of `type`:
 * unknown flags `EINVAL`; a family other than `AF_UNIX` `EAFNOSUPPORT`; a type out of range
 * `EINVAL`; a protocol other than 0 (or `AF_UNIX`) `EPROTONOSUPPORT`; a type other than
 * `SOCK_STREAM` `ESOCKTNOSUPPORT` (this kernel has no datagram unix sockets).
 */
function socketType(domain: unknown, type: unknown, protocol: unknown): number {
  const family = argInt(domain, 'domain');
  const value = argInt(type, 'type');
  const proto = argInt(protocol ?? 0, 'protocol');
  const flags = value & ~SOCK_TYPE_MASK;
  if (value < 0 || (flags & ~SOCK_FLAGS) !== 0) {
    throw new KernelError('EINVAL', `socket: unknown type flags 0x${(value >>> 0).toString(16)}`);
  }
  if (family !== AF_UNIX) {
    throw new KernelError('EAFNOSUPPORT', `socket: address family ${family} is not supported`);
  }
  const kind = value & SOCK_TYPE_MASK;
  if (kind >= SOCK_MAX) throw new KernelError('EINVAL', `socket: bad type ${kind}`);
  if (proto !== 0 && proto !== AF_UNIX) {
    throw new KernelError('EPROTONOSUPPORT', `socket: protocol ${proto} is not supported`);
  }
  if (kind !== SOCK_STREAM) {
    throw new KernelError('ESOCKTNOSUPPORT', `socket: type ${kind} is not supported for AF_UNIX`);
  }
  return flags;
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
