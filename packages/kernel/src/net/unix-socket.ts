import {
  KernelError,
  O_NONBLOCK,
  O_RDWR,
  SHUT_RD,
  SHUT_RDWR,
  SHUT_WR,
  SOMAXCONN,
} from '@liveupdate/machine';
import type { File, FileOperations, SyscallContext } from '../vfs/file.js';
import type { Vfs } from '../vfs/vfs.js';
import { WaitQueue } from '../wait-queue.js';

/**
 * Bytes a socket's receive queue holds before its peer's writes wait (or fail with `EAGAIN`):
 * Linux's default socket buffer, `net.core.wmem_default`.
 */
export const UNIX_STREAM_BUFFER = 212_992;

/** A write's bytes as queued (an skb), with the files of its `SCM_RIGHTS`, which it holds. */
interface Segment {
  readonly data: Uint8Array;
  offset: number;
  rights: File[] | null;
}

/** What a receive takes off the queue: bytes, and the files the caller now holds, if any came. */
export interface UnixReceived {
  readonly data: Uint8Array;
  readonly rights: readonly File[] | null;
}

type SocketState = 'unconnected' | 'listening' | 'connected' | 'closed';

const EMPTY = new Uint8Array(0);

/**
 * An `AF_UNIX` `SOCK_STREAM` socket (`struct unix_sock`, `net/unix/af_unix.c`): a byte stream to
 * its peer that also carries files (`SCM_RIGHTS`). A connection is made at `connect`: the client
 * is connected at once to a new server-side socket that waits in the listener's backlog until
 * `accept` hands it out, so a client may write before it is accepted, as in Linux.
 *
 * Each socket has one wait queue, woken on every change a waiter could be waiting for: data or
 * room in its receive queue, its backlog, its state. Waiters re-check their condition.
 */
export class UnixSocket {
  /** The name it is bound to (`bind`), if any; the node stays in the VFS after the socket dies. */
  address: string | null = null;
  #state: SocketState = 'unconnected';
  #peer: UnixSocket | null = null;
  readonly #queue: Segment[] = [];
  #queuedBytes = 0;
  readonly #backlog: UnixSocket[] = [];
  #maxBacklog = 0;
  /** `RCV_SHUTDOWN`: reads see end of file once the queue is empty. */
  #readShut = false;
  /** `SEND_SHUTDOWN`: writes fail with `EPIPE`. */
  #writeShut = false;
  /** `sk_err`: reported once by the next read that finds the queue empty. */
  #error: 'ECONNRESET' | null = null;
  readonly #wait = new WaitQueue();
  readonly #vfs: Vfs;

  constructor(vfs: Vfs) {
    this.#vfs = vfs;
  }

  /** `socketpair`: two sockets connected to each other. */
  static pair(vfs: Vfs): [UnixSocket, UnixSocket] {
    const a = new UnixSocket(vfs);
    const b = new UnixSocket(vfs);
    a.#connectTo(b);
    return [a, b];
  }

  get listening(): boolean {
    return this.#state === 'listening';
  }

  /** Bytes waiting in the receive queue. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /**
   * `listen`: accept connections, at most `backlog` (cut to `SOMAXCONN`) waiting for `accept`.
   * Again on a listening socket: a new backlog. `EINVAL` when unbound or connected.
   */
  listen(backlog: number): void {
    if (this.#state === 'connected' || this.#state === 'closed') {
      throw new KernelError('EINVAL', 'listen: the socket is connected');
    }
    if (this.address === null) throw new KernelError('EINVAL', 'listen: the socket is not bound');
    this.#maxBacklog = Math.min(backlog, SOMAXCONN);
    this.#state = 'listening';
    this.#wait.wake();
  }

  /**
   * `connect` to `listener`. `EISCONN` when connected already, `EINVAL` when listening,
   * `ECONNREFUSED` when `listener` does not listen (or stops while this waits). A full backlog
   * gives `EAGAIN` when `nonblock`, else a wait for room (`EINTR` when `abort` fires first).
   */
  async connect(listener: UnixSocket, nonblock: boolean, abort: AbortSignal): Promise<void> {
    for (;;) {
      if (this.#state === 'connected')
        throw new KernelError('EISCONN', 'connect: already connected');
      if (this.#state !== 'unconnected')
        throw new KernelError('EINVAL', `connect: the socket is ${this.#state}`);
      if (listener.#state !== 'listening') {
        throw new KernelError('ECONNREFUSED', `connect: nothing listens on ${listener.address}`);
      }
      // Linux's unix_recvq_full: the backlog takes one more than its size.
      if (listener.#backlog.length <= listener.#maxBacklog) break;
      if (nonblock)
        throw new KernelError('EAGAIN', `connect: the backlog of ${listener.address} is full`);
      await listener.#wait.wait(abort, `room in the backlog of ${listener.address}`);
    }
    const server = new UnixSocket(this.#vfs);
    server.address = listener.address;
    this.#connectTo(server);
    listener.#backlog.push(server);
    listener.#wait.wake();
  }

  /**
   * `accept`: the next connection of the backlog. `EINVAL` when not listening; an empty backlog
   * gives `EAGAIN` when `nonblock`, else a wait (`EINTR` when `abort` fires first).
   */
  async accept(nonblock: boolean, abort: AbortSignal): Promise<UnixSocket> {
    for (;;) {
      if (this.#state !== 'listening') {
        throw new KernelError('EINVAL', 'accept: the socket is not listening');
      }
      const server = this.#backlog.shift();
      if (server) {
        this.#wait.wake();
        return server;
      }
      if (nonblock) throw new KernelError('EAGAIN', 'accept: no connection is waiting');
      await this.#wait.wait(abort, 'a connection');
    }
  }

  /**
   * Queue `data` for the peer; `rights` (files whose references this call takes over) travel
   * with its first byte. Writes what fits in the peer's buffer and waits for room for the rest;
   * with `nonblock`, returns what fitted, or `EAGAIN` when nothing did. `ENOTCONN` when not
   * connected, `EPIPE` when this side was shut down for writing or the peer for reading (or
   * closed); an error after some bytes were queued returns their count instead. Rights that were
   * not queued (an error first, or no data: a stream carries files only with bytes) are released.
   */
  async send(
    data: Uint8Array,
    rights: readonly File[],
    nonblock: boolean,
    abort: AbortSignal,
  ): Promise<number> {
    let pending: File[] | null = rights.length > 0 ? [...rights] : null;
    let sent = 0;
    try {
      if (this.#state !== 'connected') {
        throw new KernelError('ENOTCONN', 'send: the socket is not connected');
      }
      while (sent < data.length) {
        const peer = this.#peer;
        if (this.#state !== 'connected' || !peer) {
          throw new KernelError('ENOTCONN', 'send: the socket is not connected');
        }
        if (this.#writeShut || peer.#readShut || peer.#state === 'closed') {
          throw new KernelError('EPIPE', 'send: the connection is shut down for writing');
        }
        const room = UNIX_STREAM_BUFFER - peer.#queuedBytes;
        if (room <= 0) {
          if (nonblock) throw new KernelError('EAGAIN', 'send: the peer buffer is full');
          await peer.#wait.wait(abort, 'room in the peer buffer');
          continue;
        }
        const n = Math.min(room, data.length - sent);
        peer.#queue.push({ data: data.slice(sent, sent + n), offset: 0, rights: pending });
        peer.#queuedBytes += n;
        pending = null;
        sent += n;
        peer.#wait.wake();
      }
      return sent;
    } catch (error) {
      if (sent > 0 && KernelError.isInstance(error)) return sent;
      throw error;
    } finally {
      if (pending) await this.releaseFiles(pending);
    }
  }

  /**
   * Take up to `count` bytes of the stream. Files sent with a write come with that write's first
   * byte, and a receive never joins bytes across a write that carried files: it stops before one
   * (when it has bytes already) and after one. An empty queue: the pending `ECONNRESET` if any
   * (once), end of file (no bytes) when shut down for reading or the peer is gone, else `EAGAIN`
   * when `nonblock` or a wait (`EINTR` when `abort` fires first). `EINVAL` when not connected.
   */
  async receive(count: number, nonblock: boolean, abort: AbortSignal): Promise<UnixReceived> {
    for (;;) {
      if (this.#state === 'closed') throw new KernelError('EBADF', 'receive: the socket is closed');
      if (this.#state !== 'connected') {
        throw new KernelError('EINVAL', 'receive: the socket is not connected');
      }
      if (count === 0) return { data: EMPTY, rights: null };
      if (this.#queue.length > 0) break;
      if (this.#error) {
        const code = this.#error;
        this.#error = null;
        throw new KernelError(code, 'receive: the peer reset the connection');
      }
      if (this.#readShut) return { data: EMPTY, rights: null };
      if (nonblock) throw new KernelError('EAGAIN', 'receive: no data');
      await this.#wait.wait(abort, 'data on a unix socket');
    }
    const out = new Uint8Array(Math.min(count, this.#queuedBytes));
    let copied = 0;
    let rights: File[] | null = null;
    while (this.#queue.length > 0 && copied < count) {
      const segment = this.#queue[0]!;
      if (segment.rights && copied > 0) break;
      const n = Math.min(count - copied, segment.data.length - segment.offset);
      out.set(segment.data.subarray(segment.offset, segment.offset + n), copied);
      copied += n;
      segment.offset += n;
      this.#queuedBytes -= n;
      rights = segment.rights;
      segment.rights = null;
      if (segment.offset < segment.data.length) break;
      this.#queue.shift();
      if (rights) break;
    }
    this.#wait.wake();
    return { data: out.subarray(0, copied), rights };
  }

  /**
   * `shutdown`: `SHUT_RD`, `SHUT_WR` or `SHUT_RDWR` (else `EINVAL`) for this side, and the mirror
   * of it for the peer: after `SHUT_WR` the peer reads end of file, after `SHUT_RD` its writes
   * fail with `EPIPE`. An unconnected socket takes it too, as Linux's unix sockets do.
   */
  shutdown(how: number): void {
    if (how !== SHUT_RD && how !== SHUT_WR && how !== SHUT_RDWR) {
      throw new KernelError('EINVAL', `shutdown: bad direction ${how}`);
    }
    const read = how !== SHUT_WR;
    const write = how !== SHUT_RD;
    if (read) this.#readShut = true;
    if (write) this.#writeShut = true;
    const peer = this.#peer;
    if (peer && peer.#state === 'connected') {
      if (read) peer.#writeShut = true;
      if (write) peer.#readShut = true;
      peer.#wait.wake();
    }
    this.#wait.wake();
  }

  /**
   * The last reference to the socket's file is gone (`unix_release_sock`). The peer reads what is
   * queued for it, then end of file — or `ECONNRESET` when this side left bytes unread — and its
   * writes fail with `EPIPE`. A listener's connections not yet accepted die with it (their
   * clients see `ECONNRESET`). Files in flight to this socket are released.
   */
  async release(): Promise<void> {
    const dropped: File[] = [];
    if (this.#state === 'listening') {
      for (const server of this.#backlog.splice(0)) dropped.push(...server.#die(true));
    }
    dropped.push(...this.#die(false));
    await this.releaseFiles(dropped);
  }

  /** Close this socket: tell the peer, wake every waiter; returns the files of its queue. */
  #die(embryo: boolean): File[] {
    const peer = this.#peer;
    if (peer && peer.#state === 'connected') {
      peer.#readShut = true;
      peer.#writeShut = true;
      if (embryo || this.#queue.length > 0) peer.#error = 'ECONNRESET';
      peer.#wait.wake();
    }
    this.#state = 'closed';
    const files = this.#queue.flatMap((segment) => segment.rights ?? []);
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#wait.wake();
    return files;
  }

  #connectTo(peer: UnixSocket): void {
    this.#peer = peer;
    peer.#peer = this;
    this.#state = 'connected';
    peer.#state = 'connected';
  }

  /** Drop the references of files taken off the queue that nobody will install (`fput`). */
  async releaseFiles(files: readonly File[]): Promise<void> {
    for (const file of files) await this.#vfs.fput(file);
  }
}

/** The file operations of a unix stream socket: `read`/`write` are `recvmsg`/`sendmsg` without files. */
export const unixStreamOperations: FileOperations = {
  async read(file: File, count: number, _offset: number, ctx: SyscallContext) {
    const socket = unixSocketFromFile(file);
    const received = await socket.receive(count, nonblocking(file), ctx.process.exiting);
    // read(2) has no room for files: they are closed, as with recvmsg and no control buffer.
    await socket.releaseFiles(received.rights ?? []);
    return received.data;
  },
  write(file: File, data: Uint8Array, _offset: number, ctx: SyscallContext) {
    return unixSocketFromFile(file).send(data, [], nonblocking(file), ctx.process.exiting);
  },
  release(file: File) {
    return unixSocketFromFile(file).release();
  },
};

/** The socket behind `file`; `ENOTSOCK` when `file` is not a unix socket. */
export function unixSocketFromFile(file: File): UnixSocket {
  if (file.fops !== unixStreamOperations || !(file.privateData instanceof UnixSocket)) {
    throw new KernelError('ENOTSOCK', `${file.path} is not a socket`);
  }
  return file.privateData;
}

/**
 * A new file for `socket`, holding one reference for the caller, non-blocking when `flags` has
 * `O_NONBLOCK` (`SOCK_NONBLOCK`).
 */
export function unixSocketFile(vfs: Vfs, socket: UnixSocket, flags: number): File {
  return vfs.anonInodeGetFile(
    'socket',
    unixStreamOperations,
    socket,
    O_RDWR | (flags & O_NONBLOCK),
  );
}

export function nonblocking(file: File): boolean {
  return (file.flags & O_NONBLOCK) !== 0;
}
