import { O_RDWR, SEEK_SET } from './fcntl.js';
import { SCM_MAX_FD, type Sockaddr, type SockaddrIn } from './socket.js';
import type { KernelImage } from './kernel-image.js';

/** How a {@link Process} reaches the running kernel; implemented by the machine. */
export interface SyscallChannel {
  syscall(pid: number, name: string, args: readonly unknown[]): Promise<unknown>;
  isAlive(pid: number): boolean;
}

/** A segment of a memory mapping: a live view of RAM frames of the mapped file. */
export interface MappedSegment {
  /** Offset of this segment inside the mapping. */
  readonly offset: number;
  /** Physical address of the segment. */
  readonly phys: number;
  /** Live view of the segment's bytes in RAM. */
  readonly bytes: Uint8Array;
}

/** A file mapped with {@link Process.mmap}: direct access to the frames that back it. */
export interface MemoryMapping {
  /** Identifies the mapping for {@link Process.munmap} (its "address"). */
  readonly address: number;
  readonly length: number;
  readonly segments: readonly MappedSegment[];
}

/**
 * Live views of the bytes `[offset, offset + length)` of a mapping, one per segment the range
 * crosses, in order: writing into them writes the file's frames. `RangeError` when the range is
 * not inside the mapping.
 */
export function mappingSlices(
  mapping: MemoryMapping,
  offset: number,
  length: number,
): Uint8Array[] {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new RangeError(`bad mapping range ${offset}+${length}`);
  }
  const slices: Uint8Array[] = [];
  for (let done = 0; done < length;) {
    const at = offset + done;
    const segment = mapping.segments.find((s) => at >= s.offset && at < s.offset + s.bytes.length);
    if (!segment) throw new RangeError(`offset ${at} is outside the mapping`);
    const start = at - segment.offset;
    const n = Math.min(length - done, segment.bytes.length - start);
    slices.push(segment.bytes.subarray(start, start + n));
    done += n;
  }
  return slices;
}

/** A copy of the bytes `[offset, offset + length)` of a mapping (see {@link mappingSlices}). */
export function readMapping(mapping: MemoryMapping, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let done = 0;
  for (const slice of mappingSlices(mapping, offset, length)) {
    out.set(slice, done);
    done += slice.length;
  }
  return out;
}

/** Write `data` into a mapping at `offset` (see {@link mappingSlices}). */
export function writeMapping(mapping: MemoryMapping, offset: number, data: Uint8Array): void {
  let done = 0;
  for (const slice of mappingSlices(mapping, offset, data.length)) {
    slice.set(data.subarray(done, done + slice.length));
    done += slice.length;
  }
}

/** Options of {@link Process.sendmsg}. */
export interface SendmsgOptions {
  /** `SCM_RIGHTS`: fds whose open files travel with the first byte (at most `SCM_MAX_FD`). */
  readonly rights?: readonly number[];
  /** `MSG_DONTWAIT`, `MSG_NOSIGNAL`; any other bit: `EOPNOTSUPP`. */
  readonly flags?: number;
}

/** Options of {@link Process.recvmsg}. */
export interface RecvmsgOptions {
  /**
   * Room for received fds (the size of the control buffer), default `SCM_MAX_FD`. Fds beyond it
   * are closed and the result has `MSG_CTRUNC`.
   */
  readonly maxRights?: number;
  /** `MSG_DONTWAIT`, `MSG_CMSG_CLOEXEC`; any other bit: `EOPNOTSUPP`. */
  readonly flags?: number;
}

/** What {@link Process.recvmsg} received. */
export interface RecvmsgResult {
  /** The bytes; empty at end of file. */
  readonly data: Uint8Array;
  /** New fds of this process for the files that came with the first of these bytes. */
  readonly rights: number[];
  /** `MSG_CTRUNC` when fds did not fit (see {@link RecvmsgOptions.maxRights}), else 0. */
  readonly flags: number;
}

/**
 * A userspace process. It runs in the calling thread; each method is a syscall that travels to
 * the kernel currently running on the machine and resolves with its result, or rejects with a
 * `KernelError` carrying the errno (`code: 'EBADF'`, `errno: 9`).
 *
 * A process ends when it calls {@link exit}, or at kexec, like every process. From the moment
 * `exit` reaches the kernel every new syscall of the process rejects with `ESRCH`.
 */
export class Process {
  readonly pid: number;
  readonly #channel: SyscallChannel;
  readonly #ram: SharedArrayBuffer;

  /** @internal Use `machine.spawn()`. */
  constructor(pid: number, channel: SyscallChannel, ram: SharedArrayBuffer) {
    this.pid = pid;
    this.#channel = channel;
    this.#ram = ram;
  }

  /** Whether the process still runs (it has not exited and no kexec has happened since). */
  get alive(): boolean {
    return this.#channel.isAlive(this.pid);
  }

  /**
   * Issue a syscall by name. The typed methods below are wrappers around this; modules may add
   * syscalls of their own (`memfd_create`, …) that are called through it.
   */
  syscall(name: string, ...args: unknown[]): Promise<unknown> {
    return this.#channel.syscall(this.pid, name, args);
  }

  /** `open(2)`: open a device path; returns the new fd. */
  async open(path: string, flags: number = O_RDWR): Promise<number> {
    return (await this.syscall('open', path, flags)) as number;
  }

  /** `close(2)`. */
  async close(fd: number): Promise<void> {
    await this.syscall('close', fd);
  }

  /** `read(2)`: up to `count` bytes from the file position, which advances. */
  async read(fd: number, count: number): Promise<Uint8Array> {
    return (await this.syscall('read', fd, count)) as Uint8Array;
  }

  /** `write(2)`: returns the number of bytes written. */
  async write(fd: number, data: Uint8Array): Promise<number> {
    return (await this.syscall('write', fd, data)) as number;
  }

  /**
   * `pread(2)`: read at `offset` without moving the file position. Only for a file that can seek
   * (its fops have `llseek`); any other, even a readable one, fails with `ESPIPE`.
   */
  async pread(fd: number, count: number, offset: number): Promise<Uint8Array> {
    return (await this.syscall('pread', fd, count, offset)) as Uint8Array;
  }

  /**
   * `pwrite(2)`: write at `offset` without moving the file position. Only for a file that can
   * seek (its fops have `llseek`); any other, even a writable one, fails with `ESPIPE`.
   */
  async pwrite(fd: number, data: Uint8Array, offset: number): Promise<number> {
    return (await this.syscall('pwrite', fd, data, offset)) as number;
  }

  /** `lseek(2)`: returns the new position. `ESPIPE` for a file that cannot seek. */
  async lseek(fd: number, offset: number, whence: number = SEEK_SET): Promise<number> {
    return (await this.syscall('lseek', fd, offset, whence)) as number;
  }

  /**
   * `ioctl(2)`. `arg` is the argument struct as bytes in the kernel's layout; what the kernel
   * writes back to it lands in the same array. Resolves with the ioctl's return value.
   */
  async ioctl(fd: number, cmd: number, arg?: Uint8Array): Promise<number> {
    const result = (await this.syscall('ioctl', fd, cmd, arg ?? null)) as {
      value: number;
      arg: Uint8Array | null;
    };
    if (arg && result.arg) arg.set(result.arg.subarray(0, arg.length));
    return result.value;
  }

  /** `dup(2)`: a new fd (without `FD_CLOEXEC`) for the same open file. */
  async dup(fd: number): Promise<number> {
    return (await this.syscall('dup', fd)) as number;
  }

  /** `fcntl(2)` for the commands in `fcntl.ts` (`F_GETFD`, `F_SETFD`, `F_DUPFD`, …). */
  async fcntl(fd: number, cmd: number, arg = 0): Promise<number> {
    return (await this.syscall('fcntl', fd, cmd, arg)) as number;
  }

  /** `ftruncate(2)`: set the size of a file open for writing. */
  async ftruncate(fd: number, length: number): Promise<void> {
    await this.syscall('ftruncate', fd, length);
  }

  /** `fallocate(2)`: allocate (mode 0) or otherwise manipulate `[offset, offset + length)`. */
  async fallocate(fd: number, mode: number, offset: number, length: number): Promise<void> {
    await this.syscall('fallocate', fd, mode, offset, length);
  }

  /**
   * `memfd_create(2)`, served by the memfd module (`@liveupdate/plugin-memfd`) when the kernel
   * has it loaded (`ENOSYS` otherwise). Returns the new fd.
   */
  async memfdCreate(name: string, flags = 0): Promise<number> {
    return (await this.syscall('memfd_create', name, flags)) as number;
  }

  /**
   * `eventfd2(2)`: a new eventfd whose 64-bit counter starts at `initval` (0 to 2^32 - 1), with
   * `flags` from `EFD_SEMAPHORE`, `EFD_CLOEXEC` and `EFD_NONBLOCK` (any other bit: `EINVAL`).
   * Returns the new fd. `read` of 8 bytes or more returns the counter as a little-endian u64 and
   * resets it (with `EFD_SEMAPHORE`: returns 1 and decrements it); `write` of 8 bytes adds a
   * little-endian u64 to it. A read of a zero counter, or a write that would take the counter past
   * `0xfffffffffffffffe`, waits until another call or the kernel makes it possible, or fails
   * with `EAGAIN` under `EFD_NONBLOCK`. A waiting call does not hold up the process's other calls.
   */
  async eventfd(initval = 0, flags = 0): Promise<number> {
    return (await this.syscall('eventfd2', initval, flags)) as number;
  }

  /**
   * `socket(2)`: a new stream socket, `socket(AF_UNIX, SOCK_STREAM, 0)` or a TCP socket on
   * loopback, `socket(AF_INET, SOCK_STREAM, 0)`, optionally with `SOCK_NONBLOCK` and
   * `SOCK_CLOEXEC` or-ed into `type`. Another family: `EAFNOSUPPORT`; another type:
   * `ESOCKTNOSUPPORT` (`AF_UNIX`) or `EPROTONOSUPPORT` (`AF_INET`); another protocol:
   * `EPROTONOSUPPORT`. Returns the new fd.
   */
  async socket(domain: number, type: number, protocol = 0): Promise<number> {
    return (await this.syscall('socket', domain, type, protocol)) as number;
  }

  /** `socketpair(2)`: two unix stream sockets connected to each other (arguments as {@link socket}). */
  async socketpair(domain: number, type: number, protocol = 0): Promise<[number, number]> {
    return (await this.syscall('socketpair', domain, type, protocol)) as [number, number];
  }

  /**
   * `bind(2)`. A unix socket binds to a filesystem path (1 to 107 bytes; relative to `/`): creates
   * the socket node, which stays until {@link unlink}, even after the socket is closed.
   * `EADDRINUSE` when the path exists. A TCP socket binds to `{ family: AF_INET, address:
   * INADDR_LOOPBACK, port }` (port 0: any free one, see {@link getsockname}): the host's
   * 127.0.0.1:port, which real clients outside the machine reach. `EADDRNOTAVAIL` for another
   * address, `EADDRINUSE` when the port is taken, `EAFNOSUPPORT` for another family. Both:
   * `EINVAL` when the socket is bound already.
   *
   * @example
   * ```ts
   * const listener = await cache.socket(AF_INET, SOCK_STREAM);
   * await cache.bind(listener, { family: AF_INET, address: INADDR_LOOPBACK, port: 0 });
   * await cache.listen(listener, 128);
   * const { port } = (await cache.getsockname(listener)) as SockaddrIn;
   * ```
   */
  async bind(fd: number, address: string | SockaddrIn): Promise<void> {
    await this.syscall('bind', fd, address);
  }

  /**
   * `getsockname(2)`: the address a socket is bound to: `{ family: AF_INET, address, port }` for
   * a TCP socket (`0.0.0.0:0` until bound), `{ family: AF_UNIX, path }` for a unix socket (an
   * empty path when unnamed).
   */
  async getsockname(fd: number): Promise<Sockaddr> {
    return (await this.syscall('getsockname', fd)) as Sockaddr;
  }

  /**
   * `listen(2)`: accept connections on a bound socket (`EINVAL` when connected; a unix socket
   * must be bound, an unbound TCP socket is bound to a free port first).
   */
  async listen(fd: number, backlog: number): Promise<void> {
    await this.syscall('listen', fd, backlog);
  }

  /**
   * `connect(2)` to the socket listening at `path`: `ENOENT` when nothing is there,
   * `ECONNREFUSED` when no socket listens there, `EISCONN` when connected already. Waits while
   * the listener's backlog is full (`EAGAIN` for a non-blocking socket). A TCP socket does not
   * connect on this machine (`EOPNOTSUPP`): its peers are clients outside it.
   */
  async connect(fd: number, path: string): Promise<void> {
    await this.syscall('connect', fd, path);
  }

  /**
   * `accept4(2)`: the fd of the next connection of a listening unix or TCP socket (`EINVAL` when not
   * listening), with `SOCK_NONBLOCK`/`SOCK_CLOEXEC` from `flags`. Waits for a connection
   * (`EAGAIN` for a non-blocking socket).
   */
  async accept(fd: number, flags = 0): Promise<number> {
    return (await this.syscall('accept4', fd, flags)) as number;
  }

  /**
   * `sendmsg(2)` on a connected socket (TCP: no `rights`, else `EOPNOTSUPP`): `data`, with `SCM_RIGHTS` fds whose open files the
   * receiver gets as new fds (the files stay open while in flight, even if closed here). Returns
   * the bytes sent; waits for room unless non-blocking. Files travel only with bytes: with empty
   * `data` nothing is sent. `EBADF` for a bad fd in `rights`, `EINVAL` for more than
   * `SCM_MAX_FD`, `EOPNOTSUPP` for a unix socket among them; `EPIPE` when the peer is gone.
   *
   * @example
   * ```ts
   * await service.sendmsg(sock, new TextEncoder().encode('cache'), { rights: [memfd] });
   * const { data, rights: [fd] } = await agent.recvmsg(conn, 4096);
   * ```
   */
  async sendmsg(fd: number, data: Uint8Array, options: SendmsgOptions = {}): Promise<number> {
    return (await this.syscall(
      'sendmsg',
      fd,
      data,
      options.rights ?? [],
      options.flags ?? 0,
    )) as number;
  }

  /**
   * `recvmsg(2)` up to `count` bytes of a connected socket, and (unix) the fds sent with the first
   * of them. A call never joins bytes of a message that carried fds with other bytes. Waits for
   * data unless non-blocking; empty `data` at end of file; `ECONNRESET` once when the peer closed
   * with data unread (unix) or reset the connection (TCP).
   */
  async recvmsg(fd: number, count: number, options: RecvmsgOptions = {}): Promise<RecvmsgResult> {
    return (await this.syscall(
      'recvmsg',
      fd,
      count,
      options.maxRights ?? SCM_MAX_FD,
      options.flags ?? 0,
    )) as RecvmsgResult;
  }

  /** `shutdown(2)` of a socket: `SHUT_RD`, `SHUT_WR` or `SHUT_RDWR`. */
  async shutdown(fd: number, how: number): Promise<void> {
    await this.syscall('shutdown', fd, how);
  }

  /** `unlink(2)` of a socket node made by {@link bind} (`EPERM` for a device node). */
  async unlink(path: string): Promise<void> {
    await this.syscall('unlink', path);
  }

  /**
   * `mmap(2)` of a file that supports it: the returned segments are live views of the RAM frames
   * backing `[offset, offset + length)` of the file, so no byte is copied.
   */
  async mmap(fd: number, length: number, offset = 0): Promise<MemoryMapping> {
    const result = (await this.syscall('mmap', fd, length, offset)) as {
      address: number;
      segments: { offset: number; phys: number; length: number }[];
    };
    return {
      address: result.address,
      length,
      segments: result.segments.map((s) => ({
        offset: s.offset,
        phys: s.phys,
        bytes: new Uint8Array(this.#ram, s.phys, s.length),
      })),
    };
  }

  /** `munmap(2)` of a whole mapping. The views of its segments must not be used afterwards. */
  async munmap(mapping: MemoryMapping): Promise<void> {
    await this.syscall('munmap', mapping.address);
  }

  /**
   * `kexec_load(2)`: load the next kernel. The machine starts its worker now and lets it import
   * its modules, so the reboot does not pay for that.
   */
  async kexecLoad(image: KernelImage): Promise<void> {
    await this.syscall('kexec_load', image);
  }

  /**
   * `reboot(2)`. With `LINUX_REBOOT_CMD_KEXEC` the reboot notifiers run (the first error aborts
   * the kexec and is returned here, the system keeps running), then the KHO handover is written,
   * every process ends (this one too) and the loaded kernel boots. The promise resolves once the
   * new kernel runs, so the caller can spawn the processes of the new generation. A reboot issued
   * while another one is in progress (from any process) fails with `EBUSY`, as does `kexecLoad`
   * then.
   */
  async reboot(cmd: number): Promise<void> {
    await this.syscall('reboot', cmd);
  }

  /** `delete_module(2)`: unload a module, running its `exit`. */
  async deleteModule(name: string): Promise<void> {
    await this.syscall('delete_module', name);
  }

  /**
   * `exit(2)`: end the process. Syscalls issued from now on fail with `ESRCH` and install
   * nothing; those already in the kernel finish first (a waiting read gives up with `EINTR`), then
   * every fd and mapping is closed, including what those syscalls installed. Resolves once all of
   * that is done; `ESRCH` when the process is exiting already.
   */
  async exit(): Promise<void> {
    await this.syscall('exit');
  }
}
