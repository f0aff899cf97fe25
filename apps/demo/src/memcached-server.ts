import {
  AF_INET,
  INADDR_LOOPBACK,
  KernelError,
  SHUT_RDWR,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  type Process,
  type SockaddrIn,
} from '@liveupdate/machine';
import { MemcachedExecutor } from './memcached-executor.js';
import { MemcachedParser } from './memcached-parser.js';
import { MemcachedStats } from './memcached-stats.js';
import type { MemcachedTable } from './memcached-table.js';

/** Bytes one `read` of a connection asks for. */
const READ_BYTES = 64 * 1024;

/** Options of {@link MemcachedServer.listen}. */
export interface MemcachedServerOptions {
  /** The port on 127.0.0.1; 0 (the default) takes a free one, see {@link MemcachedServer.port}. */
  readonly port?: number;
  /** `listen` backlog; default 128. */
  readonly backlog?: number;
  /** The expiry clock in Unix seconds; default the host's. */
  readonly now?: () => number;
}

/**
 * A memcached text-protocol server in a process of the machine: it listens on 127.0.0.1 with a
 * TCP socket of the process and serves the items of a {@link MemcachedTable} (a mapped memfd) to
 * real clients on the host. Each connection is its own loop of `read`, parse, run, `write`, so
 * several clients are served at once; a slow one holds up no other. The listener and the
 * connections are the process's fds: they go when it exits and at kexec; a new process listens
 * again after it has retrieved the memfd.
 */
export class MemcachedServer {
  readonly stats = new MemcachedStats();
  readonly #process: Process;
  readonly #table: MemcachedTable;
  readonly #executor: MemcachedExecutor;
  readonly #listener: number;
  readonly #connections = new Set<number>();
  readonly #loops = new Set<Promise<void>>();
  #port = 0;
  #closing = false;

  private constructor(
    process: Process,
    table: MemcachedTable,
    listener: number,
    now: () => number,
  ) {
    this.#process = process;
    this.#table = table;
    this.#listener = listener;
    this.#executor = new MemcachedExecutor(table, this.stats, now);
  }

  /** Listen on 127.0.0.1:`options.port` in `process` and serve `table` until {@link close}. */
  static async listen(
    process: Process,
    table: MemcachedTable,
    options: MemcachedServerOptions = {},
  ): Promise<MemcachedServer> {
    const listener = await process.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC);
    try {
      await process.bind(listener, {
        family: AF_INET,
        address: INADDR_LOOPBACK,
        port: options.port ?? 0,
      });
      await process.listen(listener, options.backlog ?? 128);
    } catch (error) {
      await process.close(listener);
      throw error;
    }
    const now = options.now ?? (() => Math.floor(Date.now() / 1000));
    const server = new MemcachedServer(process, table, listener, now);
    server.#port = ((await process.getsockname(listener)) as SockaddrIn).port;
    server.#track(server.#acceptLoop());
    return server;
  }

  /** The port clients connect to. */
  get port(): number {
    return this.#port;
  }

  /**
   * Stop: close the listener (its waiting `accept` fails), shut every connection down so its
   * loop ends and closes it — the loop closes its own fd, so no fd number is closed twice — and
   * wait for the loops.
   */
  async close(): Promise<void> {
    this.#closing = true;
    await this.#closeQuietly(this.#listener);
    for (const fd of [...this.#connections]) {
      try {
        await this.#process.shutdown(fd, SHUT_RDWR);
      } catch (error) {
        if (!KernelError.isInstance(error)) throw error;
      }
    }
    await Promise.all([...this.#loops]);
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let fd: number;
      try {
        fd = await this.#process.accept(this.#listener, SOCK_CLOEXEC);
      } catch (error) {
        // Closed by close(), or the process ended (exit, kexec): nothing left to accept.
        if (this.#closing || !this.#process.alive) return;
        if (KernelError.isInstance(error) && (error.code === 'ESRCH' || error.code === 'EINTR')) {
          return;
        }
        throw error;
      }
      this.#connections.add(fd);
      this.stats.currConnections++;
      this.stats.totalConnections++;
      this.#track(this.#serve(fd));
    }
  }

  /** One connection: requests are answered in order; replies of one read go out in one write. */
  async #serve(fd: number): Promise<void> {
    const parser = new MemcachedParser(this.#table.maxValueBytes);
    try {
      for (;;) {
        const data = await this.#process.read(fd, READ_BYTES);
        if (data.length === 0) return;
        const replies: Uint8Array[] = [];
        let quit = false;
        for (const request of parser.feed(data)) {
          const reply = this.#executor.run(request);
          if (reply) replies.push(reply);
          if (request.kind === 'quit' || (request.kind === 'error' && request.close)) quit = true;
        }
        if (replies.length > 0) await this.#writeAll(fd, replies);
        if (quit) return;
      }
    } catch (error) {
      // A client that resets or goes away ends its connection only.
      if (!KernelError.isInstance(error)) throw error;
    } finally {
      this.#connections.delete(fd);
      this.stats.currConnections--;
      await this.#closeQuietly(fd);
    }
  }

  async #writeAll(fd: number, replies: readonly Uint8Array[]): Promise<void> {
    const out = new Uint8Array(replies.reduce((sum, reply) => sum + reply.length, 0));
    let offset = 0;
    for (const reply of replies) {
      out.set(reply, offset);
      offset += reply.length;
    }
    let sent = 0;
    while (sent < out.length) sent += await this.#process.write(fd, out.subarray(sent));
  }

  /** Keep `loop` until it ends; a loop that fails (a bug) fails {@link close}. */
  #track(loop: Promise<void>): void {
    this.#loops.add(loop);
    const forget = (): void => {
      if (!this.#closing) this.#loops.delete(loop);
    };
    loop.then(forget, forget);
  }

  async #closeQuietly(fd: number): Promise<void> {
    try {
      await this.#process.close(fd);
    } catch (error) {
      // The process is gone (exit, kexec): its fds went with it.
      if (!KernelError.isInstance(error)) throw error;
    }
  }
}
