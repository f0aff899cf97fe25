import { KernelError, type KernelLog } from '@liveupdate/kernel';
import { hex } from '@liveupdate/machine';
import { Mutex } from './async-lock.js';
import type { FileHandler } from './file-handler.js';
import { callFlb, callVoidFlb, type HandlerCallContext } from './handler-call.js';
import type { FlbOp, FlbOpArgs, LiveUpdateFlb } from './liveupdate-flb.js';
import { LIVEUPDATE_FLB_COMPAT_LENGTH, LUO_FLB_MAX, type LuoFlbSer } from './luo-abi.js';
import type { DataChecksum, PreservedDataChecksums } from './preserved-data-checksums.js';

/** What the registry needs of {@link PreservedDataChecksums}: an FLB's data is checksummed as a file's. */
export type FlbChecksums = Pick<PreservedDataChecksums, 'of' | 'sizeProblem' | 'crcProblem'>;

const FLB_OPS: readonly FlbOp[] = ['preserve', 'unpreserve', 'retrieve', 'finish'];
const utf8 = new TextEncoder();

/** One registered FLB (kernel: `struct luo_flb_private`): its links and its outgoing state. */
interface RegisteredFlb {
  readonly flb: LiveUpdateFlb;
  /** Around the outgoing count and the ops it triggers. */
  readonly lock: Mutex;
  /** Preserved files of linked handlers. */
  count: number;
  data: bigint;
  obj: unknown;
}

/** An FLB the previous kernel handed over (kernel: `luo_flb_private.incoming`). */
interface IncomingFlb {
  readonly name: string;
  readonly data: bigint;
  /** `data_size` and `data_crc` of its entry (0 and 0 in `luo-v1`). */
  readonly checksum: DataChecksum;
  /**
   * What is wrong with its `luo_flb_ser` (a `data_size` that is no preserved folio, or data that
   * does not match `data_crc`): it is never retrieved nor finished, and every use gets `EIO`.
   */
  damage: string | undefined;
  /** The data matched `data_crc`: checked once, before the first `retrieve`. */
  verified: boolean;
  /** Linked files not finished yet; `finish` runs when it reaches 0. */
  count: bigint;
  obj: unknown;
  retrieved: boolean;
  /** Its `retrieve` failed: the data was read and refused; every later use gets this error. */
  failed: KernelError | undefined;
  finished: boolean;
  /** Around retrieve and the finish countdown. */
  readonly lock: Mutex;
}

/**
 * The FLBs of this kernel (`luo_flb.c`): which handlers each is linked to, the outgoing refcounts
 * driven by preserve and unpreserve of linked files, and the incoming FLBs with their countdown to
 * `finish`. The orchestrator calls it; every FLB op goes through `handler-call.ts`.
 */
export class FlbRegistry {
  readonly #calls: HandlerCallContext;
  readonly #log: KernelLog;
  /** In registration order: the order of `preserve` for a file, and of the serialized table. */
  readonly #flbs: RegisteredFlb[] = [];
  readonly #byHandler = new Map<FileHandler, RegisteredFlb[]>();
  readonly #incoming = new Map<string, IncomingFlb>();
  readonly #checksums: FlbChecksums;

  constructor(calls: HandlerCallContext, log: KernelLog, checksums: FlbChecksums) {
    this.#calls = calls;
    this.#log = log;
    this.#checksums = checksums;
  }

  /**
   * `liveupdate_register_flb()`: link `flb` to `handler`. One FLB may serve several handlers.
   * `EINVAL` for a malformed FLB, `EEXIST` when already linked to `handler` or when another FLB
   * has its compatible, `ENOSPC` beyond {@link LUO_FLB_MAX} distinct FLBs.
   */
  register(handler: FileHandler, flb: LiveUpdateFlb): void {
    checkFlb(flb);
    let registered = this.#flbs.find((r) => r.flb === flb);
    if (!registered && this.#flbs.some((r) => r.flb.compatible === flb.compatible)) {
      throw new KernelError('EEXIST', `another FLB is registered as "${flb.compatible}"`);
    }
    const linked = this.#byHandler.get(handler) ?? [];
    if (registered && linked.includes(registered)) {
      throw new KernelError(
        'EEXIST',
        `FLB "${flb.compatible}" is already linked to file handler "${handler.compatible}"`,
      );
    }
    if (!registered) {
      if (this.#flbs.length >= LUO_FLB_MAX) {
        throw new KernelError(
          'ENOSPC',
          `LUO: ${LUO_FLB_MAX} FLBs is the limit (one page of luo_flb_ser)`,
        );
      }
      registered = { flb, lock: new Mutex(), count: 0, data: 0n, obj: undefined };
      this.#flbs.push(registered);
    }
    linked.push(registered);
    this.#byHandler.set(handler, linked);
  }

  /** The compatibles of the registered FLBs, in registration order. */
  get compatibles(): string[] {
    return this.#flbs.map((r) => r.flb.compatible);
  }

  /** Whether `handler` has FLBs linked (it cannot be unregistered then). */
  linked(handler: FileHandler): boolean {
    return (this.#byHandler.get(handler)?.length ?? 0) > 0;
  }

  /**
   * Take the FLBs of the incoming handover, as read and validated at boot. An FLB whose
   * `data_size` is not the size of a preserved folio at its `data` is damaged (logged now): it
   * fails alone, with `EIO`, when it is first used.
   */
  setIncoming(entries: readonly LuoFlbSer[]): void {
    for (const entry of entries) {
      const problem = this.#checksums.sizeProblem(entry.data, entry);
      const incoming: IncomingFlb = {
        name: entry.name,
        data: entry.data,
        checksum: entry,
        damage: undefined,
        verified: false,
        count: entry.count,
        obj: undefined,
        retrieved: false,
        failed: undefined,
        finished: false,
        lock: new Mutex(),
      };
      if (problem !== undefined)
        this.#damage(incoming, `luo_flb_ser data ${hex(entry.data)}: ${problem}`);
      this.#incoming.set(entry.name, incoming);
    }
  }

  #damage(incoming: IncomingFlb, problem: string): void {
    incoming.damage = problem;
    this.#log.err(
      `LUO: FLB ${incoming.name}: ${problem}; it is never retrieved and the files that depend on it fail with EIO`,
    );
  }

  /** Log the incoming FLBs no handler of this kernel links: they are never retrieved. */
  logUnclaimed(): void {
    for (const name of this.#incoming.keys()) {
      if (!this.#flbs.some((r) => r.flb.compatible === name)) {
        this.#log.warn(
          `LUO: incoming FLB "${name}" has no registered FLB; its preserved memory is leaked`,
        );
      }
    }
  }

  /**
   * `luo_flb_file_preserve()`: a file of `handler` is being preserved. +1 on each linked FLB;
   * the first file calls the FLB's `preserve`. When one throws, the FLBs counted before it for
   * this file are taken back and the error goes to `PRESERVE_FD`.
   */
  async filePreserve(handler: FileHandler): Promise<void> {
    const done: RegisteredFlb[] = [];
    try {
      for (const registered of this.#byHandler.get(handler) ?? []) {
        await registered.lock.run(async () => {
          if (registered.count === 0) {
            const args = this.#args(registered.flb, 0n, undefined);
            await callFlb(this.#calls, registered.flb, 'preserve', () =>
              registered.flb.preserve(args),
            );
            try {
              registered.data = checkedData(registered.flb, args.data);
            } catch (error) {
              await callVoidFlb(this.#calls, registered.flb, 'unpreserve', () =>
                registered.flb.unpreserve(args),
              );
              throw error;
            }
            registered.obj = args.obj;
          }
          registered.count++;
        });
        done.push(registered);
      }
    } catch (error) {
      for (const registered of done.reverse()) await this.#unpreserveOne(registered);
      throw error;
    }
  }

  /** `luo_flb_file_unpreserve()`: -1 on each linked FLB; the last file calls `unpreserve`. */
  async fileUnpreserve(handler: FileHandler): Promise<void> {
    for (const registered of [...(this.#byHandler.get(handler) ?? [])].reverse())
      await this.#unpreserveOne(registered);
  }

  async #unpreserveOne(registered: RegisteredFlb): Promise<void> {
    await registered.lock.run(async () => {
      if (--registered.count > 0) return;
      const args = this.#args(registered.flb, registered.data, registered.obj);
      await callVoidFlb(this.#calls, registered.flb, 'unpreserve', () =>
        registered.flb.unpreserve(args),
      );
      registered.data = 0n;
      registered.obj = undefined;
    });
  }

  /**
   * `luo_flb_file_finish()`: an incoming file of `handler` finished. -1 on each linked incoming
   * FLB; at 0 the FLB is retrieved if nobody did, then finished. A failed implicit retrieve is
   * logged and `finish` is skipped (the FLB's memory stays), as upstream.
   */
  async fileFinish(handler: FileHandler): Promise<void> {
    for (const registered of [...(this.#byHandler.get(handler) ?? [])].reverse()) {
      const incoming = this.#incoming.get(registered.flb.compatible);
      if (!incoming || incoming.finished) continue;
      await incoming.lock.run(async () => {
        if (--incoming.count > 0n) return;
        incoming.finished = true;
        if (!incoming.retrieved) {
          try {
            await this.#retrieve(registered.flb, incoming);
          } catch (error) {
            this.#log.warn(
              `LUO: FLB ${incoming.name}: retrieve before finish failed (${(error as Error).message}); not finished`,
            );
            return;
          }
        }
        const args = this.#args(registered.flb, incoming.data, incoming.obj);
        await callVoidFlb(this.#calls, registered.flb, 'finish', () => registered.flb.finish(args));
        incoming.obj = undefined;
      });
    }
  }

  /** `liveupdate_flb_get_outgoing()`: the object `preserve` set; `ENOENT` when not preserved. */
  getOutgoing(flb: LiveUpdateFlb): unknown {
    const registered = this.#flbs.find((r) => r.flb === flb);
    if (!registered || registered.count === 0) {
      throw new KernelError('ENOENT', `LUO: FLB "${String(flb?.compatible)}" is not preserved`);
    }
    return registered.obj;
  }

  /**
   * `liveupdate_flb_get_incoming()`: the object `retrieve` set, retrieving it on first use.
   * `ENOENT` when `flb` is not registered, nothing came for it, or it has finished. A failed
   * `retrieve` is sticky: every later call gets its errno, as the files that depend on it must
   * (its data was read and refused; reading it again would find it freed).
   */
  async getIncoming(flb: LiveUpdateFlb): Promise<unknown> {
    const registered = this.#flbs.find((r) => r.flb === flb);
    const incoming = registered && this.#incoming.get(flb.compatible);
    if (!incoming || incoming.finished) {
      throw new KernelError(
        'ENOENT',
        `LUO: no incoming FLB "${String(flb?.compatible)}"${incoming ? ' (finished)' : ''}`,
      );
    }
    return incoming.lock.run(async () => {
      if (incoming.finished)
        throw new KernelError('ENOENT', `LUO: incoming FLB "${flb.compatible}" finished`);
      if (!incoming.retrieved) await this.#retrieve(flb, incoming);
      return incoming.obj;
    });
  }

  async #retrieve(flb: LiveUpdateFlb, incoming: IncomingFlb): Promise<void> {
    if (!incoming.damage && !incoming.verified) {
      const problem = this.#checksums.crcProblem(incoming.data, incoming.checksum, 'luo_flb_ser');
      if (problem !== undefined) this.#damage(incoming, problem);
      else incoming.verified = true;
    }
    if (incoming.damage) {
      throw new KernelError('EIO', `LUO: FLB ${incoming.name}: ${incoming.damage}`);
    }
    if (incoming.failed) {
      throw new KernelError(
        incoming.failed.code,
        `LUO: FLB ${incoming.name} failed to retrieve before: ${incoming.failed.message}`,
        { cause: incoming.failed },
      );
    }
    const args = this.#args(flb, incoming.data, undefined);
    try {
      await callFlb(this.#calls, flb, 'retrieve', () => flb.retrieve(args));
    } catch (error) {
      if (!KernelError.isInstance(error)) throw error;
      incoming.failed = error;
      this.#log.err(
        `LUO: FLB ${incoming.name}: retrieve failed (${error.message}); the files that depend on it fail with it`,
      );
      throw error;
    }
    incoming.obj = args.obj;
    incoming.retrieved = true;
  }

  /**
   * `luo_flb_serialize()`: every FLB some preserved file depends on, in registration order, with
   * the checksum of its data as it is now (call it after every file's `freeze`).
   */
  outgoingTable(): LuoFlbSer[] {
    return this.#flbs
      .filter((r) => r.count > 0)
      .map((r) => ({
        name: r.flb.compatible,
        data: r.data,
        count: BigInt(r.count),
        ...this.#checksums.of(r.data),
      }));
  }

  #args(flb: LiveUpdateFlb, data: bigint, obj: unknown): FlbOpArgs {
    return { flb, data, obj };
  }
}

/** Validate an FLB object from a third party, saying what was expected and what was found. */
function checkFlb(flb: LiveUpdateFlb): void {
  if (typeof flb !== 'object' || flb === null) {
    throw new KernelError('EINVAL', `an FLB must be an object, got ${String(flb)}`);
  }
  const { compatible } = flb;
  const length = typeof compatible === 'string' ? utf8.encode(compatible).length : -1;
  if (length < 1 || length > LIVEUPDATE_FLB_COMPAT_LENGTH - 1 || compatible.includes('\0')) {
    throw new KernelError(
      'EINVAL',
      `FLB compatible must be 1-${LIVEUPDATE_FLB_COMPAT_LENGTH - 1} bytes without NUL, got ${JSON.stringify(compatible)}`,
    );
  }
  for (const op of FLB_OPS) {
    if (typeof flb[op] !== 'function') {
      throw new KernelError(
        'EINVAL',
        `FLB "${compatible}" must implement ${op}(), found ${typeof flb[op]}`,
      );
    }
  }
}

function checkedData(flb: LiveUpdateFlb, data: FlbOpArgs['data']): bigint {
  if (typeof data !== 'bigint' || data < 0n || data > 0xffff_ffff_ffff_ffffn) {
    throw new KernelError(
      'EIO',
      `LUO: FLB ${flb.compatible} set data to ${String(data)}, not a u64 bigint`,
    );
  }
  return data;
}
