// luod: the one process that holds LUO sessions for services. A service hands it fds over a unix
// socket; the agent preserves them in a session named after the service and, before the kexec,
// writes what it holds into a sealed memfd in its own session. The next kernel's agent reads
// that manifest and gives each service its fds back when it reconnects.
import { LiveUpdateDevice, type LiveUpdateSession } from '@liveupdate/core';
import {
  AF_UNIX,
  F_ADD_SEALS,
  KernelError,
  MFD_ALLOW_SEALING,
  SOCK_STREAM,
  type ErrnoName,
  type Process,
} from '@liveupdate/machine';
import { asKernelError, messageOf } from './agent-errors.js';
import {
  AGENT_SESSION,
  MANIFEST_TOKEN,
  MANIFEST_VERSION,
  encodeManifest,
  entryNameProblem,
  orderProblem,
  serviceNameProblem,
  type Manifest,
  type ManifestEntry,
} from './agent-manifest.js';
import { AGENT_MAX_FDS, MessageReader, sendMessage, type WireMessage } from './agent-wire.js';
import { MANIFEST_SEALS, readManifest, type ReadManifest } from './read-manifest.js';

/** Where the agent listens unless told otherwise. */
export const DEFAULT_AGENT_PATH = '/run/luod.sock';

/** Options of {@link LuoAgent.start} and {@link LuoAgent.restore}. */
export interface LuoAgentOptions {
  /** The socket path to listen on (default {@link DEFAULT_AGENT_PATH}). */
  readonly path?: string;
  /**
   * What an `update` request does after the agent {@link LuoAgent.prepare}d: load and boot the
   * next kernel (e.g. `kexec_load` and `reboot`). Without it, `update` is `EOPNOTSUPP` and the
   * agent's owner prepares and kexecs itself.
   */
  readonly update?: () => Promise<unknown>;
  /** Told of what goes wrong where no one waits for an answer: a connection, an `update`. */
  readonly onError?: (error: unknown) => void;
  /**
   * {@link LuoAgent.restore} only: a service that has not said `hello` this many milliseconds
   * after the restore is reclaimed: its session is finished (LUO releases its files), its entries
   * are dropped, and its next `hello` is `ETIMEDOUT`, once. Without it (the default) the agent
   * waits until {@link LuoAgent.close} or the next {@link LuoAgent.prepare}.
   */
  readonly reclaimAfterMs?: number;
  /** Told of each service reclaimed after `reclaimAfterMs`, once its files are released. */
  readonly onReclaim?: (service: string) => void;
  /**
   * Told once the socket accepts connections: the moment to start the services. With
   * {@link LuoAgent.restore} that is before the manifest is read, so that their `connect` and
   * `hello` overlap the restore: their connections wait in the backlog until the services are
   * known, and are reset if the restore fails.
   */
  readonly onListening?: () => void;
}

/** One named entry of a service. */
interface Entry {
  readonly order: number;
  /** The entry's tokens in the service's session. */
  readonly tokens: readonly number[];
  /** The agent's fds for it, once stored or retrieved; `null` before the retrieve after a kexec. */
  fds: number[] | null;
  /** Why the retrieve after a kexec failed: `fetch` gets this error. */
  error: KernelError | null;
  /** Whether the service fetched it since the kexec. */
  fetched: boolean;
}

/** What the agent holds for one service. */
interface Service {
  /** The service's LUO session; `null` until the service stores something (or after finish). */
  session: LiveUpdateSession | null;
  /** Whether the session came from the previous kernel and is not finished yet. */
  incoming: boolean;
  /** Why the session could not be retrieved after the kexec (the service's `hello` gets it). */
  error: KernelError | null;
  readonly entries: Map<string, Entry>;
  nextToken: number;
  /** The connection that said `hello` with this name and is still open. */
  owner: object | null;
  /** Whether the service said `hello` since the restore (it is not reclaimed then). */
  cameBack: boolean;
  /** The retrieve of its files that {@link LuoAgent.restore} started (never rejects). */
  retrieved: Promise<void>;
}

/**
 * The agent. {@link LuoAgent.start} on a fresh boot, {@link LuoAgent.restore} after a live update;
 * {@link LuoAgent.prepare} before the kexec, {@link LuoAgent.close} to stop. See docs/agent.md.
 */
export class LuoAgent {
  /** The process the agent runs in. */
  readonly process: Process;
  /** The socket path it listens on. */
  readonly path: string;
  readonly #options: LuoAgentOptions;
  readonly #services = new Map<string, Service>();
  readonly #connections = new Set<number>();
  #listener = -1;
  #manifestSession: LiveUpdateSession | null = null;
  #closed = false;
  #reclaimTimer: ReturnType<typeof setTimeout> | undefined;
  /** The end of the queue that stores, prepare and abortUpdate take turns in. */
  #turn: Promise<unknown> = Promise.resolve();
  /** After a restore: `luod` finished and closed (never rejects). */
  #released: Promise<void> = Promise.resolve();

  private constructor(process: Process, options: LuoAgentOptions) {
    this.process = process;
    this.path = options.path ?? DEFAULT_AGENT_PATH;
    this.#options = options;
  }

  /**
   * Check that `process` can open `/dev/liveupdate` (`ENOENT` without LUO, `EBUSY` while another
   * process has it open) and listen at the socket path: a fresh agent.
   */
  static async start(process: Process, options: LuoAgentOptions = {}): Promise<LuoAgent> {
    await (await LiveUpdateDevice.open(process)).close();
    const agent = new LuoAgent(process, options);
    await agent.#listen();
    return agent;
  }

  /**
   * After a live update: retrieve the agent's session `luod`, read and check its manifest, retrieve
   * each service's session, then accept. Rejects with `ENOENT` when there is no `luod` session
   * (nothing was preserved by an agent) and `EIO` when the manifest is damaged; then no
   * service session has been retrieved and `/dev/liveupdate` is closed again.
   *
   * The socket is bound and listening beside the manifest's syscalls (`onListening` is told then,
   * so that services may start and connect at once); connections wait in its backlog until the
   * services are known, and on a failure the socket is closed (they are reset) and its path
   * removed. The services' sessions are retrieved together, then each one's files, in the
   * manifest's order; a `hello` waits for its own service's. It resolves once the agent accepts;
   * `/dev/liveupdate` is closed and `luod` finished after the files are retrieved
   * ({@link settled}). A failure there reaches `onError`.
   */
  static async restore(process: Process, options: LuoAgentOptions = {}): Promise<LuoAgent> {
    const { reclaimAfterMs } = options;
    if (reclaimAfterMs !== undefined && !(Number.isFinite(reclaimAfterMs) && reclaimAfterMs >= 0))
      throw new RangeError(
        `LuoAgent.restore: reclaimAfterMs must be a finite number of milliseconds ≥ 0, not ${reclaimAfterMs}`,
      );
    const agent = new LuoAgent(process, options);
    // The socket comes up beside the manifest's syscalls (their round trips overlap); connections
    // wait in its backlog until the services are known.
    const listening = agent.#bindListener();
    listening.then(
      () => agent.#told(options.onListening),
      () => undefined,
    );
    let device: LiveUpdateDevice;
    let read: ReadManifest;
    try {
      device = await LiveUpdateDevice.open(process);
      try {
        read = await readManifest(process, device);
      } catch (error) {
        await device.close();
        throw error;
      }
    } catch (error) {
      // Nothing to serve: the socket goes, and its path with it, for the next agent.
      await listening.then(
        (fd) => agent.#unbind(fd),
        () => undefined,
      );
      throw error;
    }
    const { manifest, release } = read;
    const services = [...manifest.services].map(([name, entries]) => {
      const service = newService(true);
      for (const [entryName, { order, tokens }] of entries) {
        service.entries.set(entryName, { order, tokens, fds: null, error: null, fetched: false });
        service.nextToken = Math.max(service.nextToken, ...tokens.map((t) => t + 1));
      }
      agent.#services.set(name, service);
      return [name, service] as const;
    });
    // Every session at once: LUO answers them in turn, without a round trip between them.
    await Promise.all(
      services.map(async ([name, service]) => {
        try {
          service.session = await device.retrieveSession(name);
        } catch (error) {
          // This service alone fails: its hello gets the error, the others are served.
          service.error = asKernelError(error);
          service.incoming = false;
        }
      }),
    );
    try {
      agent.#listener = await listening;
    } catch (error) {
      await device.close();
      await release().catch(() => undefined);
      throw error;
    }
    void agent.#acceptLoop();
    for (const [, service] of services) {
      if (!service.incoming) continue;
      // In turn: a reclaim, a prepare or a close comes after the retrieve, never under it.
      service.retrieved = agent.#inTurn(() => agent.#retrieveAll(service));
    }
    // After the retrieves in the queue, so that its round trip is not on their path.
    agent.#released = agent
      .#inTurn(async () => {
        await device.close();
        await release();
      })
      .catch((error: unknown) => {
        if (!agent.#closed && !isGone(error)) agent.#options.onError?.(error);
      });
    if (reclaimAfterMs !== undefined) {
      agent.#reclaimTimer = setTimeout(() => {
        void agent.#reclaim(`it did not say hello within ${reclaimAfterMs} ms of the restore`);
      }, reclaimAfterMs);
      // The agent's close() clears it; it must not keep the host's event loop alive by itself.
      agent.#reclaimTimer.unref?.();
    }
    return agent;
  }

  /**
   * Resolves once what {@link LuoAgent.restore} started after listening is done: every restored
   * service's files retrieved (or the error its `fetch` will get recorded) and `luod` finished.
   * At once for an agent that {@link LuoAgent.start}ed. Never rejects.
   */
  settled(): Promise<void> {
    return this.#released;
  }

  /** The services the agent holds, with their entry names (for the owner's logs and tests). */
  get services(): ReadonlyMap<string, readonly string[]> {
    return new Map([...this.#services].map(([name, s]) => [name, [...s.entries.keys()]]));
  }

  /** Whether {@link prepare} ran and no store may change what the manifest says. */
  get prepared(): boolean {
    return this.#manifestSession !== null;
  }

  /**
   * Write the manifest into a sealed memfd and preserve it in the session `luod`: call right before
   * the kexec. From then on `store` is `EBUSY` until {@link abortUpdate}. Sessions of the previous
   * kernel that were not finished are finished first (their files released): they cannot cross.
   */
  prepare(): Promise<void> {
    return this.#inTurn(() => this.#prepare());
  }

  async #prepare(): Promise<void> {
    if (this.#manifestSession) throw new KernelError('EBUSY', 'the agent is prepared already');
    for (const [name, service] of this.#services) {
      if (service.incoming) await this.#finish(name, service);
    }
    const manifest: Manifest = {
      version: MANIFEST_VERSION,
      services: new Map(
        [...this.#services]
          .filter(([, service]) => service.session && service.entries.size > 0)
          .map(([name, service]) => [
            name,
            new Map<string, ManifestEntry>(
              [...service.entries].map(([entry, { order, tokens }]) => [entry, { order, tokens }]),
            ),
          ]),
      ),
    };
    const bytes = encodeManifest(manifest);
    const fd = await this.process.memfdCreate('luod-manifest', MFD_ALLOW_SEALING);
    try {
      for (let done = 0; done < bytes.length;) {
        done += await this.process.pwrite(fd, bytes.subarray(done), done);
      }
      await this.process.fcntl(fd, F_ADD_SEALS, MANIFEST_SEALS);
      const session = await this.#withDevice((device) => device.createSession(AGENT_SESSION));
      try {
        await session.preserveFd(fd, MANIFEST_TOKEN);
      } catch (error) {
        await session.close();
        throw error;
      }
      this.#manifestSession = session;
    } finally {
      // The session holds the file now (or nothing does, after a failure).
      await this.process.close(fd);
    }
  }

  /** Undo {@link prepare} after a kexec that did not happen: drop the manifest, take stores again. */
  abortUpdate(): Promise<void> {
    return this.#inTurn(async () => {
      const session = this.#manifestSession;
      this.#manifestSession = null;
      // Closing an outgoing session unpreserves its files: the stale manifest goes with it.
      await session?.close();
    });
  }

  /**
   * Stop: close the listener and every connection, finish the sessions of the previous kernel
   * that services never came back for (their files are released), close the others (their files
   * are no longer preserved) and `/dev/liveupdate`.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reclaimTimer);
    // A retrieve the restore started is not cut short: its fds would be left open.
    await this.#released;
    await Promise.all([this.#listener, ...this.#connections].map((fd) => this.#closeQuietly(fd)));
    this.#connections.clear();
    for (const [name, service] of this.#services) {
      try {
        if (service.incoming) await this.#finish(name, service);
        await this.#closeEntries(service);
        await service.session?.close();
      } catch (error) {
        // One service's session that LUO refuses to finish does not keep the others open.
        this.#options.onError?.(error);
      }
      service.session = null;
    }
    await this.#manifestSession?.close();
    this.#manifestSession = null;
  }

  /**
   * Open `/dev/liveupdate` for `action` alone. It opens exclusively: between the agent's own calls
   * other processes (an updater's `CHECK_KEXEC`, a service not yet moved to the agent) may open
   * it, and while one does, the agent's call that needs it fails with `EBUSY`.
   */
  async #withDevice<T>(action: (device: LiveUpdateDevice) => Promise<T>): Promise<T> {
    const device = await LiveUpdateDevice.open(this.process);
    try {
      return await action(device);
    } finally {
      await device.close();
    }
  }

  /**
   * Reclaim now every service of the previous kernel that has not said `hello` since the restore,
   * as `reclaimAfterMs` does when it runs out: finish its session (LUO releases its files), drop
   * its entries; its next `hello` is `ETIMEDOUT`, once. For an owner that knows when waiting is
   * over (every service it starts has started). Resolves with the services reclaimed, once their
   * files are released; a session that cannot be finished is left out and told to `onError`.
   */
  reclaim(): Promise<string[]> {
    return this.#reclaim("the agent's owner reclaimed it before it said hello");
  }

  async #reclaim(why: string): Promise<string[]> {
    const late = [...this.#services].filter(([, service]) => service.incoming && !service.cameBack);
    for (const [name, service] of late) {
      // Set now, so that a hello from here on is told, even before the files are released.
      service.error = new KernelError(
        'ETIMEDOUT',
        `service "${name}" did not come back: ${why}; its files were released`,
      );
    }
    return this.#inTurn(async () => {
      const reclaimed: string[] = [];
      for (const [name, service] of late) {
        // prepare() may have finished it in the meantime.
        if (!service.incoming) continue;
        try {
          await this.#finish(name, service);
        } catch (error) {
          // One service's session that cannot be finished does not keep the others'.
          if (!this.#closed && !isGone(error)) this.#options.onError?.(error);
          continue;
        }
        reclaimed.push(name);
        this.#options.onReclaim?.(name);
      }
      return reclaimed;
    });
  }

  async #listen(): Promise<void> {
    this.#listener = await this.#bindListener();
    void this.#acceptLoop();
    this.#told(this.#options.onListening);
  }

  /** Call one of the owner's callbacks; what it throws goes to `onError`, not into the agent. */
  #told(callback: (() => void) | undefined): void {
    try {
      callback?.();
    } catch (error) {
      this.#options.onError?.(error);
    }
  }

  /** A socket bound at the agent's path and listening, not accepting yet. */
  async #bindListener(): Promise<number> {
    const fd = await this.process.socket(AF_UNIX, SOCK_STREAM);
    try {
      await this.process.bind(fd, this.path);
    } catch (error) {
      await this.process.close(fd);
      throw error;
    }
    try {
      await this.process.listen(fd, 64);
    } catch (error) {
      await this.#unbind(fd);
      throw error;
    }
    return fd;
  }

  /** Close a bound socket and remove its path. */
  async #unbind(fd: number): Promise<void> {
    await this.#closeQuietly(fd);
    await this.process.unlink(this.path).catch(() => undefined);
  }

  async #acceptLoop(): Promise<void> {
    for (;;) {
      let conn: number;
      try {
        conn = await this.process.accept(this.#listener);
      } catch (error) {
        // The listener closed (close()) or the kernel went away (kexec): nothing to serve.
        if (!this.#closed && !isGone(error)) this.#options.onError?.(error);
        return;
      }
      this.#connections.add(conn);
      void this.#serve(conn);
    }
  }

  /** Serve one connection until `bye`, end of file or a protocol error. */
  async #serve(conn: number): Promise<void> {
    const reader = new MessageReader(this.process, conn);
    const client = { service: null as string | null };
    // A finish owed after a fetch, done when the service next speaks or hangs up (see below).
    let finishOwed = false;
    try {
      for (;;) {
        const message = await reader.next();
        if (finishOwed && !this.#closed) {
          finishOwed = false;
          await this.#finishWhenFetched(client);
        }
        if (!message) break;
        let reply: WireMessage;
        let replyFds: number[] = [];
        try {
          [reply, replyFds] = await this.#handle(client, message.body, message.fds);
        } catch (error) {
          const kernelError = asKernelError(error);
          reply = { error: kernelError.code, message: messageOf(kernelError) };
        }
        await sendMessage(this.process, conn, reply, replyFds);
        // Only once the fds are on their way may the session be finished and the agent's closed;
        // and not at once: the service's first steps with them (an mmap, its first answer) would
        // wait behind the finish in the kernel. It is done before the service's next request is
        // handled (its bye, say) or when it hangs up, whichever comes first.
        if (message.body.op === 'fetch' && 'ok' in reply && message.body.finish !== false)
          finishOwed = true;
        if (message.body.op === 'update' && 'ok' in reply) this.#startUpdate();
        if (message.body.op === 'bye') break;
      }
    } catch (error) {
      if (!this.#closed && !isGone(error)) this.#options.onError?.(error);
    } finally {
      if (finishOwed && !this.#closed) await this.#finishWhenFetched(client);
      await reader.close().catch(() => undefined);
      this.#release(client);
      if (this.#connections.delete(conn)) await this.#closeQuietly(conn);
    }
  }

  async #handle(
    client: { service: string | null },
    body: WireMessage,
    fds: readonly number[],
  ): Promise<[WireMessage, number[]]> {
    if (body.op !== 'store' && fds.length > 0) {
      await this.#closeAll(fds);
      throw new KernelError('EINVAL', `"${String(body.op)}" carries no fds, ${fds.length} came`);
    }
    switch (body.op) {
      case 'hello':
        return [await this.#hello(client, body.service), []];
      case 'store': {
        if (client.service === null) await this.#closeAll(fds); // refused below: EACCES
        const service = this.#serviceOf(client);
        return [await this.#inTurn(() => this.#store(service, body, fds)), []];
      }
      case 'fetch':
        if (body.finish !== undefined && typeof body.finish !== 'boolean')
          throw new KernelError(
            'EINVAL',
            `fetch: finish must be a boolean, not ${JSON.stringify(body.finish)}`,
          );
        return this.#fetch(this.#serviceOf(client), body.name);
      case 'finish':
        return [await this.#finishOnRequest(this.#serviceOf(client)), []];
      case 'list':
        return [this.#list(this.#serviceOf(client)), []];
      case 'update':
        return [await this.#update(), []];
      case 'bye':
        // Released before the answer: a new connection of the service may say hello at once.
        this.#release(client);
        return [{ ok: true }, []];
      default:
        throw new KernelError('EOPNOTSUPP', `unknown request ${JSON.stringify(body.op)}`);
    }
  }

  /**
   * Run `action` after every store, prepare and abortUpdate before it has ended: a store cannot
   * slip between the manifest being written and the kexec, nor land half in it.
   */
  #inTurn<T>(action: () => Promise<T>): Promise<T> {
    const result = this.#turn.then(action);
    this.#turn = result.catch(() => undefined);
    return result;
  }

  /** The connection no longer speaks for its service. */
  #release(client: { service: string | null }): void {
    const service = client.service === null ? undefined : this.#services.get(client.service);
    if (service?.owner === client) service.owner = null;
  }

  async #hello(client: { service: string | null }, name: unknown): Promise<WireMessage> {
    if (client.service !== null)
      throw new KernelError('EISCONN', `this connection is service "${client.service}" already`);
    const problem = serviceNameProblem(name);
    if (problem) throw new KernelError('EINVAL', `hello: the service name ${problem}`);
    const serviceName = name as string;
    let service = this.#services.get(serviceName);
    if (service?.owner)
      throw new KernelError('EEXIST', `service "${serviceName}" is connected already`);
    if (service?.error) {
      // Told once: the service starts afresh on its next hello.
      this.#services.delete(serviceName);
      throw service.error;
    }
    if (!service) {
      service = newService(false);
      this.#services.set(serviceName, service);
    }
    service.owner = client;
    service.cameBack = true;
    client.service = serviceName;
    const restored = service.incoming;
    if (restored) await service.retrieved;
    return { ok: true, restored };
  }

  /** The service of a connection that said hello; `EACCES` for one that did not. */
  #serviceOf(client: { service: string | null }): [string, Service] {
    if (client.service === null) throw new KernelError('EACCES', 'say hello first');
    return [client.service, this.#services.get(client.service)!];
  }

  async #store(
    [name, service]: [string, Service],
    body: WireMessage,
    fds: readonly number[],
  ): Promise<WireMessage> {
    try {
      const entryProblem = entryNameProblem(body.name);
      if (entryProblem) throw new KernelError('EINVAL', `store: the name ${entryProblem}`);
      const order = body.order ?? 0;
      const problem = orderProblem(order);
      if (problem) throw new KernelError('EINVAL', `store: order ${problem}`);
      if (body.fds !== fds.length || fds.length < 1 || fds.length > AGENT_MAX_FDS)
        throw new KernelError(
          'EINVAL',
          `store: fds says ${JSON.stringify(body.fds)}, ${fds.length} fds came (1 to ${AGENT_MAX_FDS})`,
        );
      if (this.#manifestSession)
        throw new KernelError('EBUSY', 'store: the agent is prepared for a live update');
      if (service.incoming)
        throw new KernelError('EBUSY', `store: service "${name}" has fds to fetch from the update`);
      const entryName = body.name as string;
      if (service.entries.has(entryName))
        throw new KernelError('EEXIST', `store: "${entryName}" is stored already`);
      service.session ??= await this.#withDevice((device) => device.createSession(name));
      const tokens: number[] = [];
      for (const fd of fds) {
        const token = service.nextToken++;
        // LUO has no unpreserve: on a failure, the files preserved before it stay in the session
        // without an entry, are left out of the manifest, and are released by the next kernel's
        // finish of the session.
        await service.session.preserveFd(fd, token);
        tokens.push(token);
      }
      service.entries.set(entryName, {
        order: order as number,
        tokens,
        fds: [...fds],
        error: null,
        fetched: false,
      });
      return { ok: true };
    } catch (error) {
      await this.#closeAll(fds);
      throw error;
    }
  }

  #fetch([name, service]: [string, Service], entryName: unknown): [WireMessage, number[]] {
    const problem = entryNameProblem(entryName);
    if (problem) throw new KernelError('EINVAL', `fetch: the name ${problem}`);
    // Names are the service's own: another service's entry is simply not there.
    const entry = service.entries.get(entryName as string);
    if (!entry)
      throw new KernelError('ENOENT', `fetch: service "${name}" has no "${String(entryName)}"`);
    if (entry.error) throw entry.error;
    entry.fetched = true;
    const fds = entry.fds!;
    return [{ ok: true, fds: fds.length }, fds];
  }

  #list([, service]: [string, Service]): WireMessage {
    const entries = [...service.entries]
      .sort(([a, x], [b, y]) => x.order - y.order || (a < b ? -1 : a > b ? 1 : 0))
      .map(([name, entry]) => ({
        name,
        order: entry.order,
        fds: entry.tokens.length,
        ...(entry.error ? { error: entry.error.code } : {}),
      }));
    return { ok: true, entries };
  }

  async #update(): Promise<WireMessage> {
    const update = this.#options.update;
    if (!update)
      throw new KernelError('EOPNOTSUPP', 'update: this agent leaves the kexec to its owner');
    await this.prepare();
    return { ok: true };
  }

  /** After the answer to `update` is on its way (the kexec ends this process): kexec. */
  #startUpdate(): void {
    this.#options.update!().catch(async (error: unknown) => {
      if (isGone(error)) return;
      // The kexec did not happen: this kernel goes on, and so does the agent.
      await this.abortUpdate().catch(() => undefined);
      this.#options.onError?.(error);
    });
  }

  /** Retrieve a restored service's files in `order`, so that what depends on another comes after. */
  async #retrieveAll(service: Service): Promise<void> {
    const entries = [...service.entries]
      .filter(([, entry]) => entry.fds === null && entry.error === null)
      .sort(([a, x], [b, y]) => x.order - y.order || (a < b ? -1 : a > b ? 1 : 0));
    for (const [, entry] of entries) {
      const fds: number[] = [];
      try {
        for (const token of entry.tokens) fds.push(await service.session!.retrieveFd(token));
        entry.fds = fds;
      } catch (error) {
        // The entry fails whole: nothing of it is handed out.
        await this.#closeAll(fds);
        entry.error = asKernelError(error);
      }
    }
  }

  /** Once a restored service has fetched every entry it can, finish its session. */
  async #finishWhenFetched(client: { service: string | null }): Promise<void> {
    const name = client.service!;
    const service = this.#services.get(name)!;
    if (!service.incoming) return;
    if (![...service.entries.values()].every((e) => e.fetched || e.error)) return;
    try {
      await this.#finish(name, service);
    } catch (error) {
      this.#options.onError?.(error);
    }
  }

  /**
   * A service's `finish`: its files are in use in the new kernel (a VMM's device bound, its
   * restored HWPT replaced), so LUO may finish its session now. A refusal (`EBUSY` while a handler
   * still needs something done) leaves the session as it was, for another `finish` later.
   */
  async #finishOnRequest([name, service]: [string, Service]): Promise<WireMessage> {
    if (!service.incoming)
      throw new KernelError('ENOENT', `finish: service "${name}" has no session from the update`);
    await service.session!.finish();
    await this.#forget(service);
    return { ok: true };
  }

  /**
   * Finish an incoming session: LUO gives the files up (those never retrieved are released). The
   * service starts afresh: its next store creates a new session.
   */
  async #finish(_name: string, service: Service): Promise<void> {
    try {
      await service.session!.finish();
    } finally {
      await this.#forget(service);
    }
  }

  /** Close a service's incoming session and the agent's fds of it, and drop its entries. */
  async #forget(service: Service): Promise<void> {
    service.incoming = false;
    const session = service.session!;
    service.session = null;
    await session.close();
    await this.#closeEntries(service);
    service.entries.clear();
    service.nextToken = 1;
  }

  async #closeEntries(service: Service): Promise<void> {
    for (const entry of service.entries.values()) {
      if (entry.fds) await this.#closeAll(entry.fds);
      entry.fds = null;
    }
  }

  async #closeAll(fds: readonly number[]): Promise<void> {
    await Promise.all(fds.map((fd) => this.#closeQuietly(fd)));
  }

  async #closeQuietly(fd: number): Promise<void> {
    if (fd < 0) return;
    await this.process.close(fd).catch(() => undefined);
  }
}

/** What the agent holds for a service before anything is stored or retrieved. */
function newService(incoming: boolean): Service {
  return {
    session: null,
    incoming,
    error: null,
    entries: new Map(),
    nextToken: 1,
    owner: null,
    cameBack: false,
    retrieved: Promise.resolve(),
  };
}

/** Whether the process or its kernel went away under a call (exit, kexec). */
function isGone(error: unknown): boolean {
  const code: ErrnoName | undefined = KernelError.isInstance(error) ? error.code : undefined;
  return code === 'ESRCH' || code === 'EINTR' || code === 'EBADF';
}
