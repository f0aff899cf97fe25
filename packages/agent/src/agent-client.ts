// The service's side of the agent protocol: one connection; requests may be pipelined.
import { AF_UNIX, KernelError, SOCK_STREAM, isErrnoName, type Process } from '@liveupdate/machine';
import { DEFAULT_AGENT_PATH } from './luo-agent.js';
import { MessageReader, sendMessage, type WireMessage } from './agent-wire.js';

/** An entry as `list` describes it. */
export interface AgentEntry {
  readonly name: string;
  readonly order: number;
  /** How many fds the entry holds. */
  readonly fds: number;
  /** Why its retrieve after the kexec failed, if it did. */
  readonly error?: string;
}

/** Options of {@link AgentClient.fetch}. */
export interface AgentFetchOptions {
  /**
   * `false`: after a live update, the agent does not finish the service's session when this fetch
   * leaves every entry fetched; the service calls {@link AgentClient.finish} once its files are in
   * use (a VMM must bind its device and replace its restored HWPT before LUO lets it finish).
   * By default the agent finishes it when the service next speaks (its `bye`) or hangs up.
   */
  readonly finish?: boolean;
}

/**
 * A service's connection to the agent. Requests fail with a `KernelError` carrying the errno the
 * agent answered (docs/agent.md), or `EINVAL` for an answer that breaks the protocol.
 *
 * Requests may be **pipelined**: call the next one without awaiting the last, and they are sent,
 * and their answers read, in the order of the calls — the agent answers in the order it reads
 * (a `hello` and the `fetch`es after it cost one round trip instead of one each).
 */
export class AgentClient {
  readonly process: Process;
  readonly fd: number;
  readonly #reader: MessageReader;
  /** The last request's send and read: each request sends, and reads, after the one before. */
  #sent: Promise<unknown> = Promise.resolve();
  #read: Promise<unknown> = Promise.resolve();

  private constructor(process: Process, fd: number) {
    this.process = process;
    this.fd = fd;
    this.#reader = new MessageReader(process, fd);
  }

  /** Connect `process` to the agent at `path` (default `/run/luod.sock`). */
  static async connect(process: Process, path = DEFAULT_AGENT_PATH): Promise<AgentClient> {
    const fd = await process.socket(AF_UNIX, SOCK_STREAM);
    try {
      await process.connect(fd, path);
    } catch (error) {
      await process.close(fd);
      throw error;
    }
    return new AgentClient(process, fd);
  }

  /** Name this connection's service; resolves with whether it has fds from before the update. */
  async hello(service: string): Promise<{ restored: boolean }> {
    const { body } = await this.#request({ op: 'hello', service });
    return { restored: body.restored === true };
  }

  /** Hand the agent `fds` under `name` (the agent keeps its own references; close yours at will). */
  async store(
    name: string,
    fds: readonly number[],
    options: { order?: number } = {},
  ): Promise<void> {
    await this.#request({ op: 'store', name, order: options.order ?? 0, fds: fds.length }, fds);
  }

  /** The fds stored under `name`, as new fds of this process, in the order they were stored. */
  async fetch(name: string, options: AgentFetchOptions = {}): Promise<number[]> {
    const { body, fds } = await this.#request({
      op: 'fetch',
      name,
      ...(options.finish === false && { finish: false }),
    });
    if (body.fds !== fds.length) {
      await Promise.all(fds.map((fd) => this.process.close(fd)));
      throw new KernelError(
        'EINVAL',
        `fetch: the agent said ${String(body.fds)} fds, ${fds.length} came`,
      );
    }
    return [...fds];
  }

  /**
   * After a live update, tell the agent this service's files are in use in the new kernel: it
   * finishes the service's session (`SESSION_FINISH`). For a service that fetched with
   * `finish: false`; rejects with LUO's errno (e.g. `EBUSY`) when LUO refuses, and `ENOENT` when
   * the service has no session from the update.
   */
  async finish(): Promise<void> {
    await this.#request({ op: 'finish' });
  }

  /** This service's entries, by `order` then name. */
  async list(): Promise<AgentEntry[]> {
    const { body } = await this.#request({ op: 'list' });
    if (!Array.isArray(body.entries)) throw new KernelError('EINVAL', 'list: no entries');
    return body.entries as AgentEntry[];
  }

  /** Ask the agent to live-update now (`EOPNOTSUPP` when its owner does that itself). */
  async update(): Promise<void> {
    await this.#request({ op: 'update' });
  }

  /** Say goodbye and close the connection. */
  async bye(): Promise<void> {
    try {
      await this.#request({ op: 'bye' });
    } finally {
      await this.close();
    }
  }

  /** Close the connection without a word (the agent keeps what the service stored). */
  async close(): Promise<void> {
    await this.#reader.close();
    await this.process.close(this.fd);
  }

  async #request(
    body: WireMessage,
    fds: readonly number[] = [],
  ): Promise<{ body: WireMessage; fds: readonly number[] }> {
    const sent = this.#sent.then(() => sendMessage(this.process, this.fd, body, fds));
    this.#sent = sent.catch(() => undefined);
    // A request that could not be sent has no answer to read: the next one reads its own.
    const read = this.#read.then(async () => {
      await sent;
      return this.#reader.next();
    });
    this.#read = read.catch(() => undefined);
    const reply = await read;
    if (!reply) throw new KernelError('ECONNRESET', `the agent closed the connection`);
    if (typeof reply.body.error === 'string') {
      await Promise.all(reply.fds.map((fd) => this.process.close(fd)));
      const code = isErrnoName(reply.body.error) ? reply.body.error : 'EINVAL';
      throw new KernelError(code, `agent: ${String(reply.body.message)}`);
    }
    return reply;
  }
}
