import { Socket, createServer, type AddressInfo, type Server } from 'node:net';
import {
  AF_INET,
  INADDR_ANY,
  INADDR_LOOPBACK,
  KernelError,
  O_NONBLOCK,
  O_RDWR,
  SHUT_RD,
  SHUT_RDWR,
  SHUT_WR,
  SOMAXCONN,
  type SockaddrIn,
} from '@liveupdate/machine';
import type { File, FileOperations, SyscallContext } from '../vfs/file.js';
import type { Vfs } from '../vfs/vfs.js';
import { nonblocking } from './unix-socket.js';
import { WaitQueue } from '../wait-queue.js';

/**
 * Bytes a TCP socket's receive queue holds before the kernel stops reading from the host
 * connection (TCP then holds the sender back), and bytes its send queue holds before a write
 * waits (or fails with `EAGAIN`): Linux's default socket buffer, `net.core.wmem_default`.
 */
export const INET_STREAM_BUFFER = 212_992;

type InetState = 'unbound' | 'binding' | 'bound' | 'listening' | 'connected' | 'closed';

const EMPTY = new Uint8Array(0);

/**
 * An `AF_INET` `SOCK_STREAM` socket on loopback (`struct tcp_sock`), backed by a real TCP socket
 * of the host: `bind` makes a `node:net` server on 127.0.0.1 in the kernel worker, so a client
 * outside the machine connects to that port, and each connection it accepts is one `net.Socket`.
 * The host's TCP stack does the protocol; this class keeps Linux's socket semantics on top of it
 * (states, errnos, blocking, end of file). The handles belong to the kernel worker: they close
 * with the socket's last file, with its process, and at kexec ({@link closeHostSockets}).
 *
 * Each socket has one wait queue, woken on every change a waiter could be waiting for.
 */
export class InetSocket {
  #state: InetState = 'unbound';
  #port = 0;
  #server: Server | null = null;
  readonly #backlog: InetSocket[] = [];
  #maxBacklog = 0;
  #connection: Socket | null = null;
  readonly #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  /** `RCV_SHUTDOWN`: by `shutdown` here, or the peer's FIN. Reads see end of file once drained. */
  #readShut = false;
  /** `SEND_SHUTDOWN`: writes fail with `EPIPE`. */
  #writeShut = false;
  /** `sk_err`: reported once, by the next read that finds the queue empty or the next write. */
  #error: 'ECONNRESET' | 'EPIPE' | null = null;
  readonly #wait = new WaitQueue();

  /** `getsockname`: 0.0.0.0:0 until bound, then 127.0.0.1 and the port. */
  get name(): SockaddrIn {
    if (this.#port === 0) return { family: AF_INET, address: INADDR_ANY, port: 0 };
    return { family: AF_INET, address: INADDR_LOOPBACK, port: this.#port };
  }

  /**
   * `bind` to 127.0.0.1:`port` (0: a free port the host picks): the host listens on it from now
   * on, so the port is taken (`EADDRINUSE` when something else has it, `EACCES` when the host
   * refuses a privileged port). `EINVAL` when bound already.
   */
  async bind(port: number): Promise<void> {
    if (this.#state !== 'unbound') {
      throw new KernelError('EINVAL', `bind: the socket is bound to port ${this.#port} already`);
    }
    this.#state = 'binding';
    // allowHalfOpen: a peer's FIN ends our reads only, as in TCP; we close our side ourselves.
    const server = createServer({ allowHalfOpen: true });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: INADDR_LOOPBACK, port, exclusive: true }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (error) {
      if (this.#state === 'binding') this.#state = 'unbound';
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE' || code === 'EACCES') {
        throw new KernelError(code, `bind: ${INADDR_LOOPBACK}:${port}: ${code}`, { cause: error });
      }
      throw error;
    }
    if (this.#state !== 'binding') {
      // The socket was closed while the host bound it: nothing may keep the port.
      server.close();
      throw new KernelError('EBADF', 'bind: the socket was closed');
    }
    // None is expected after listen, but an unhandled 'error' would take the kernel worker down.
    server.on('error', () => {});
    server.on('connection', (connection) => this.#incoming(connection));
    trackHostHandle(server);
    this.#server = server;
    this.#port = (server.address() as AddressInfo).port;
    this.#state = 'bound';
  }

  /**
   * `listen`: accept connections, at most `backlog` (cut to `SOMAXCONN`) waiting for `accept`;
   * again on a listening socket: a new backlog. An unbound socket is bound to a free port first,
   * as Linux's autobind does. `EINVAL` when connected or closed.
   */
  async listen(backlog: number): Promise<void> {
    if (this.#state === 'unbound') await this.bind(0);
    if (this.#state !== 'bound' && this.#state !== 'listening') {
      throw new KernelError('EINVAL', `listen: the socket is ${this.#state}`);
    }
    this.#maxBacklog = Math.min(backlog, SOMAXCONN);
    this.#state = 'listening';
    this.#wait.wake();
  }

  /**
   * `accept`: the next connection of the backlog. `EINVAL` when not listening; an empty backlog
   * gives `EAGAIN` when `nonblock`, else a wait (`EINTR` when `abort` fires first).
   */
  async accept(nonblock: boolean, abort: AbortSignal): Promise<InetSocket> {
    for (;;) {
      if (this.#state !== 'listening') {
        throw new KernelError('EINVAL', 'accept: the socket is not listening');
      }
      const connection = this.#backlog.shift();
      if (connection) return connection;
      if (nonblock) throw new KernelError('EAGAIN', 'accept: no connection is waiting');
      await this.#wait.wait(abort, `a connection on port ${this.#port}`);
    }
  }

  /**
   * Queue `data` for the peer. Waits while the send queue holds `INET_STREAM_BUFFER` bytes or
   * more (`EAGAIN` when `nonblock`); then the whole write is queued. `EPIPE` when not connected,
   * shut down for writing or the connection is gone; the pending `ECONNRESET` once when the
   * peer reset it.
   */
  async send(data: Uint8Array, nonblock: boolean, abort: AbortSignal): Promise<number> {
    for (;;) {
      const connection = this.#connection;
      this.#throwError();
      if (this.#state !== 'connected' || !connection || this.#writeShut) {
        throw new KernelError('EPIPE', 'send: the connection is shut down for writing');
      }
      if (connection.destroyed || !connection.writable) {
        throw new KernelError('EPIPE', 'send: the connection is gone');
      }
      if (connection.writableLength < INET_STREAM_BUFFER) {
        if (data.length > 0) connection.write(data.slice());
        return data.length;
      }
      if (nonblock) throw new KernelError('EAGAIN', 'send: the send queue is full');
      await this.#wait.wait(abort, 'room in the send queue');
    }
  }

  /**
   * Take up to `count` bytes of the stream. An empty queue: the pending error (once), end of file
   * (no bytes) after the peer's FIN or `SHUT_RD`, else `EAGAIN` when `nonblock` or a wait
   * (`EINTR` when `abort` fires first). `ENOTCONN` when not connected.
   */
  async receive(count: number, nonblock: boolean, abort: AbortSignal): Promise<Uint8Array> {
    for (;;) {
      if (this.#state !== 'connected') {
        throw new KernelError('ENOTCONN', `receive: the socket is ${this.#state}`);
      }
      if (count === 0) return EMPTY;
      if (this.#queue.length > 0) break;
      this.#throwError();
      if (this.#readShut) return EMPTY;
      if (nonblock) throw new KernelError('EAGAIN', 'receive: no data');
      await this.#wait.wait(abort, 'data on a TCP socket');
    }
    const out = new Uint8Array(Math.min(count, this.#queuedBytes));
    let copied = 0;
    while (copied < out.length) {
      const chunk = this.#queue[0]!;
      const n = Math.min(out.length - copied, chunk.length);
      out.set(chunk.subarray(0, n), copied);
      copied += n;
      if (n === chunk.length) this.#queue.shift();
      else this.#queue[0] = chunk.subarray(n);
    }
    this.#queuedBytes -= copied;
    const connection = this.#connection;
    if (connection?.isPaused() && this.#queuedBytes < INET_STREAM_BUFFER) connection.resume();
    return out;
  }

  /**
   * `shutdown`: `SHUT_RD`, `SHUT_WR` or `SHUT_RDWR` (else `EINVAL`). `SHUT_WR` sends the FIN once
   * queued bytes are out: the peer reads end of file. `SHUT_RD`: reads see end of file once the
   * queue is drained, and later bytes are dropped. `ENOTCONN` when not connected.
   */
  shutdown(how: number): void {
    if (how !== SHUT_RD && how !== SHUT_WR && how !== SHUT_RDWR) {
      throw new KernelError('EINVAL', `shutdown: bad direction ${how}`);
    }
    const connection = this.#connection;
    if (this.#state !== 'connected' || !connection) {
      throw new KernelError('ENOTCONN', `shutdown: the socket is ${this.#state}`);
    }
    if (how !== SHUT_WR) this.#readShut = true;
    if (how !== SHUT_RD && !this.#writeShut) {
      this.#writeShut = true;
      connection.end();
    }
    this.#wait.wake();
  }

  /**
   * The last reference to the socket's file is gone (`tcp_close`). A listener stops listening and
   * frees its port; its connections not yet accepted are reset. A connection sends what is queued
   * and its FIN — or a reset when bytes it received were left unread, as TCP does.
   */
  release(): void {
    const state = this.#state;
    this.#state = 'closed';
    this.#server?.close();
    this.#server = null;
    for (const waiting of this.#backlog.splice(0)) waiting.#connection?.resetAndDestroy();
    const connection = this.#connection;
    if (state === 'connected' && connection) {
      if (this.#queuedBytes > 0) connection.resetAndDestroy();
      else connection.destroySoon();
    }
    this.#queue.length = 0;
    this.#queuedBytes = 0;
    this.#wait.wake();
  }

  /** A host connection to our port: into the backlog when listening and there is room, else reset. */
  #incoming(connection: Socket): void {
    trackHostHandle(connection);
    // Linux's sk_acceptq_is_full: the backlog takes one more than its size.
    if (this.#state !== 'listening' || this.#backlog.length > this.#maxBacklog) {
      connection.on('error', () => {});
      connection.resetAndDestroy();
      return;
    }
    const socket = new InetSocket();
    socket.#state = 'connected';
    socket.#port = this.#port;
    socket.#attach(connection);
    this.#backlog.push(socket);
    this.#wait.wake();
  }

  #attach(connection: Socket): void {
    this.#connection = connection;
    connection.on('data', (chunk: Buffer) => {
      if (this.#readShut || this.#state !== 'connected') return;
      this.#queue.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.#queuedBytes += chunk.byteLength;
      if (this.#queuedBytes >= INET_STREAM_BUFFER) connection.pause();
      this.#wait.wake();
    });
    connection.on('end', () => {
      this.#readShut = true;
      this.#wait.wake();
    });
    connection.on('drain', () => this.#wait.wake());
    connection.on('error', (error: NodeJS.ErrnoException) => {
      this.#error = error.code === 'EPIPE' ? 'EPIPE' : 'ECONNRESET';
      this.#wait.wake();
    });
    connection.on('close', () => {
      this.#readShut = true;
      this.#wait.wake();
    });
  }

  /** Report the pending error once (`sock_error`). */
  #throwError(): void {
    const error = this.#error;
    if (!error) return;
    this.#error = null;
    throw new KernelError(
      error,
      error === 'ECONNRESET' ? 'the peer reset the connection' : 'the connection is broken',
    );
  }
}

/** The host's handles of this kernel's sockets: listeners and connections, until they close. */
const hostHandles = new Set<Server | Socket>();

function trackHostHandle(handle: Server | Socket): void {
  hostHandles.add(handle);
  handle.once('close', () => hostHandles.delete(handle));
}

/**
 * At kexec, after the point of no return: this kernel's TCP stack is gone, so every listener
 * frees its port and every connection is dropped, at once (the host closes the descriptors now;
 * the kernel worker halts right after and never runs its event loop again). The next kernel can
 * bind the same ports.
 */
export function closeHostSockets(): void {
  for (const handle of hostHandles) {
    if (handle instanceof Socket) handle.destroy();
    else handle.close();
  }
  hostHandles.clear();
}

/** The file operations of a TCP socket: `read`/`write` are `recvmsg`/`sendmsg`. */
export const inetStreamOperations: FileOperations = {
  read(file: File, count: number, _offset: number, ctx: SyscallContext) {
    return inetSocketFromFile(file).receive(count, nonblocking(file), ctx.process.exiting);
  },
  write(file: File, data: Uint8Array, _offset: number, ctx: SyscallContext) {
    return inetSocketFromFile(file).send(data, nonblocking(file), ctx.process.exiting);
  },
  release(file: File) {
    inetSocketFromFile(file).release();
  },
};

/** The socket behind `file`; `ENOTSOCK` when `file` is not a TCP socket. */
export function inetSocketFromFile(file: File): InetSocket {
  if (file.fops !== inetStreamOperations || !(file.privateData instanceof InetSocket)) {
    throw new KernelError('ENOTSOCK', `${file.path} is not a TCP socket`);
  }
  return file.privateData;
}

/** A new file for `socket`, holding one reference, non-blocking when `flags` has `O_NONBLOCK`. */
export function inetSocketFile(vfs: Vfs, socket: InetSocket, flags: number): File {
  return vfs.anonInodeGetFile('TCP', inetStreamOperations, socket, O_RDWR | (flags & O_NONBLOCK));
}
