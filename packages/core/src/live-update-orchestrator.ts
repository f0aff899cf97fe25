import {
  CommandLine,
  File as KernelFile,
  KEXEC_HISTORY_SERVICE,
  KernelError,
  crc32c,
  getOrder,
  type FileOperations,
  type KernelLog,
  type KernelProcess,
  type KexecControl,
  type KexecHandover,
  type KexecTarget,
  type ModuleContext,
  type SyscallContext,
  type Vfs,
} from '@liveupdate/kernel';
import { ERRNO, hex, isErrnoName, type ErrnoName, type PhysicalMemory } from '@liveupdate/machine';
import { RwLock } from './async-lock.js';
import {
  handlerWrites,
  type FileHandler,
  type FileOpArgs,
  type LiveUpdateFileSession,
} from './file-handler.js';
import { FileHandlerRegistry } from './file-handler-registry.js';
import { FlbRegistry } from './flb-registry.js';
import type { FaultInjector } from './fault-injector.js';
import { callHandler, callVoidHandler } from './handler-call.js';
import {
  LUO_ABI_VERSIONS,
  LUO_FDT_KHO_ENTRY_NAME,
  LUO_FLB_TABLE_SIZE,
  LuoAbiError,
  decodeFdtCompatible,
  decodeLuoFdt,
  encodeLuoFdt,
  luoAbiCompatible,
  luoFileTableSize,
  luoSessionTableSize,
  readLuoFileTable,
  readLuoFlbTable,
  readLuoSessionTable,
  writeLuoFileTable,
  writeLuoFlbTable,
  writeLuoSessionTable,
  type LuoAbiVersion,
  type LuoFileSer,
  type LuoFlbSer,
} from './luo-abi.js';
import {
  LIVEUPDATE_CHECK_REPORT_LENGTH,
  LIVEUPDATE_CHECK_VERSION_LENGTH,
  LIVEUPDATE_CMD_EXT_BASE,
  LIVEUPDATE_EXT_IOCTLS,
  checkKexecArg,
  LIVEUPDATE_CMD_BASE,
  LIVEUPDATE_CMD_SESSION_BASE,
  LIVEUPDATE_DEVICE_IOCTLS,
  LIVEUPDATE_SESSION_IOCTLS,
  LIVEUPDATE_SESSION_NAME_LENGTH,
  copyStructFromUser,
  copyStructToUser,
  createSessionArg,
  finishArg,
  getNameArg,
  ioctlIndex,
  preserveFdArg,
  retrieveFdArg,
  retrieveSessionArg,
} from './liveupdate-uapi.js';
import { LuoFile, LuoSession } from './luo-session.js';
import { PreservedDataChecksums } from './preserved-data-checksums.js';
import { checkPreservedFrameClaims } from './preserved-frame-claims.js';
import { printableSessionName, sessionNameKey } from './session-name.js';
import { strnlen } from './struct-codec.js';

/** Limits of one kernel; configuration (`liveupdate.max_sessions=`, `liveupdate.max_files=`). */
export interface LuoLimits {
  readonly maxSessions: number;
  readonly maxFilesPerSession: number;
}

/** Defaults: far above upstream G1's fixed 819 sessions and 128 files, within one KHO folio. */
export const DEFAULT_LUO_LIMITS: LuoLimits = { maxSessions: 4096, maxFilesPerSession: 4096 };

/** Options of the orchestrator, fixed per kernel build (see `createLiveUpdateModule`). */
export interface LuoOptions {
  /**
   * The LUO ABI versions it reads and can write, newest first. Default {@link LUO_ABI_VERSIONS}.
   * `[1]` is a core as built before `luo-v2`: it panics on a `luo-v2` handover, as an older
   * kernel would on a compatible it does not know, and writes `luo-v1`.
   */
  readonly abi?: readonly LuoAbiVersion[];
}

/** What the reboot notifier wrote, so an aborted kexec can take it back. */
interface Handover {
  readonly blobs: number[];
  readonly fdtPhys: number;
  readonly releaseLock: () => void;
}

/** What {@link LiveUpdateOrchestrator.reboot} writes for the loaded kernel. */
interface HandoverPlan {
  /** The format each outgoing file is written in. */
  readonly formats: ReadonlyMap<LuoFile, string>;
  /** What the loaded kernel cannot read; a kexec with any is refused. */
  readonly problems: readonly string[];
  /** The LUO ABI version: 2 (`luo-v2`) unless the loaded kernel reads only `luo-v1`. */
  readonly abi: LuoAbiVersion;
}

/**
 * The Live Update Orchestrator of one kernel: the handler registry, the outgoing and incoming
 * sessions, `/dev/liveupdate` and the session files, the reboot notifier that freezes and
 * serializes everything into KHO-preserved memory, and the lazy deserialization of what the
 * previous kernel handed over.
 *
 * Locking, as in the kernel: a global reader/writer lock (every ioctl and close reads it; the
 * reboot serialization writes it and keeps it on success, since the machine is about to kexec),
 * a mutex per session around preserve, unpreserve, retrieve and finish, and a lock per file
 * around its handler calls.
 */
export class LiveUpdateOrchestrator {
  /** `liveupdate=on` and KHO on. */
  readonly enabled: boolean;
  readonly registry = new FileHandlerRegistry();
  /** The FLBs linked to handlers, with their outgoing and incoming refcounts. */
  readonly flbs: FlbRegistry;
  readonly limits: LuoLimits;
  /** The LUO ABI versions this core reads and writes, newest first (see {@link LuoOptions}). */
  readonly abi: readonly LuoAbiVersion[];
  /** The number this kernel hands over: incoming + 1, or 1 after a cold boot. */
  readonly liveupdateNumber: bigint;
  /**
   * `liveupdate.fault_injection=on` (default off): {@link setFaultInjector} is allowed. For test
   * kernels only, like Linux's `CONFIG_FAULT_INJECTION`.
   */
  readonly faultInjection: boolean;
  readonly #log: KernelLog;
  /** The context of every handler call (see `handler-call.ts`). */
  readonly #calls: { log: KernelLog; faultInjector: FaultInjector | undefined };
  readonly #kho: KexecHandover;
  readonly #memory: PhysicalMemory;
  /** `data_size`/`data_crc` of files' and FLBs' state: taken when written, checked before use. */
  readonly #checksums: PreservedDataChecksums;
  readonly #vfs: Vfs;
  readonly #kexec: KexecControl;
  /** Logs a refused retrieve or finish and keeps it readable (`/sys/kernel/liveupdate/failures`). */
  readonly #failure: (reason: string) => void;
  readonly #outgoing = new Map<string, LuoSession>();
  readonly #incoming = new Map<string, LuoSession>();
  readonly #ids = new Map<unknown, LuoFile>();
  readonly #lock = new RwLock();
  #incomingHeader: number | null;
  /** The incoming ABI version and session table checksum (v2). */
  #incomingVersion: LuoAbiVersion = 2;
  #incomingSessionCrc: number | null = null;
  #deserialized: 'pending' | 'done' | 'failed' = 'pending';
  #handover: Handover | undefined;

  /**
   * Set up LUO at boot. With `liveupdate=on` and KHO on, it validates the incoming `LUO` subtree
   * at once and panics on a missing or incompatible `luo-v1` root, as `luo_early_startup` does;
   * sessions and files are deserialized later, at the first open of `/dev/liveupdate`.
   */
  constructor(ctx: ModuleContext, options: LuoOptions = {}) {
    this.abi = options.abi ?? LUO_ABI_VERSIONS;
    if (this.abi.length === 0 || this.abi.some((v) => v !== 1 && v !== 2)) {
      throw new KernelError(
        'EINVAL',
        `LUO: abi must list versions 1 and/or 2, got ${JSON.stringify(this.abi)}`,
      );
    }
    this.#log = ctx.log;
    this.#calls = { log: ctx.log, faultInjector: undefined };
    this.#checksums = new PreservedDataChecksums(ctx.kho, ctx.memory);
    this.flbs = new FlbRegistry(this.#calls, ctx.log, this.#checksums);
    this.#kho = ctx.kho;
    this.#memory = ctx.memory;
    this.#vfs = ctx.vfs;
    this.#kexec = ctx.kexec;
    const history = ctx.services.get(KEXEC_HISTORY_SERVICE);
    this.#failure = (reason) => {
      ctx.log.err(reason);
      history?.recordFailure(reason);
    };
    const wanted = ctx.cmdline.bool('liveupdate', false);
    this.enabled = wanted && ctx.kho.enabled;
    if (wanted && !ctx.kho.enabled)
      ctx.log.warn('LUO: disabled, because KHO is off (boot with kho=on)');
    this.limits = {
      maxSessions: ctx.cmdline.size('liveupdate.max_sessions') ?? DEFAULT_LUO_LIMITS.maxSessions,
      maxFilesPerSession:
        ctx.cmdline.size('liveupdate.max_files') ?? DEFAULT_LUO_LIMITS.maxFilesPerSession,
    };
    this.faultInjection = ctx.cmdline.bool('liveupdate.fault_injection', false);
    if (this.faultInjection) ctx.log.info('LUO: handler fault injection is available');
    const incoming = this.enabled ? this.#readIncomingRoot(ctx) : null;
    this.#incomingHeader = incoming ? Number(incoming.sessionHeaderPhys) : null;
    if (incoming) {
      this.#incomingVersion = incoming.version;
      this.#incomingSessionCrc = incoming.sessionCrc;
    }
    if (incoming) this.flbs.setIncoming(incoming.flbs);
    this.liveupdateNumber = (incoming?.liveupdateNumber ?? 0n) + 1n;
    if (this.enabled) {
      ctx.log.info(
        `LUO: enabled, live update number ${this.liveupdateNumber}${incoming ? ', incoming sessions pending' : ''}`,
      );
    }
  }

  /** Whether any session, outgoing or incoming, exists: a live update is in progress. */
  get busy(): boolean {
    return this.#outgoing.size > 0 || this.#incoming.size > 0;
  }

  /**
   * Install `injector`, which every handler call then asks first (see {@link FaultInjector}), or
   * remove it with `undefined`. `EOPNOTSUPP` unless this kernel booted with
   * `liveupdate.fault_injection=on`.
   */
  setFaultInjector(injector: FaultInjector | undefined): void {
    if (!this.faultInjection) {
      throw new KernelError(
        'EOPNOTSUPP',
        'LUO: fault injection is off (boot with liveupdate.fault_injection=on)',
      );
    }
    this.#calls.faultInjector = injector;
  }

  /** Names of the outgoing and the incoming sessions, printable (for diagnostics and tests). */
  get sessionNames(): { outgoing: string[]; incoming: string[] } {
    const labels = (sessions: Map<string, LuoSession>): string[] =>
      [...sessions.values()].map((session) => session.label);
    return { outgoing: labels(this.#outgoing), incoming: labels(this.#incoming) };
  }

  /** `/dev/liveupdate`: exclusive open, deserializes on first open, two ioctls. */
  readonly deviceOperations: FileOperations = {
    open: () => this.#deserialize(),
    ioctl: (_file, cmd, arg, ctx) =>
      this.#lock.read(async () => {
        if ((cmd & 0xff) >= LIVEUPDATE_CMD_EXT_BASE) {
          ioctlIndex(cmd, arg, LIVEUPDATE_EXT_IOCTLS, LIVEUPDATE_CMD_EXT_BASE);
          return this.#checkKexec(arg);
        }
        const index = ioctlIndex(cmd, arg, LIVEUPDATE_DEVICE_IOCTLS, LIVEUPDATE_CMD_BASE);
        return index === 0 ? this.#createSession(arg, ctx) : this.#retrieveSession(arg, ctx);
      }),
  };

  readonly #sessionOperations: FileOperations = {
    ioctl: (file, cmd, arg, ctx) =>
      this.#lock.read(async () => {
        const session = file.privateData as LuoSession;
        const index = ioctlIndex(cmd, arg, LIVEUPDATE_SESSION_IOCTLS, LIVEUPDATE_CMD_SESSION_BASE);
        // GET_NAME suits both directions; the others only one (G2's direction check).
        if (index < 3 && session.incoming !== (index !== 0)) {
          throw new KernelError(
            'EINVAL',
            `LUO: session "${session.label}" is ${session.incoming ? 'incoming' : 'outgoing'}; this ioctl is for the other direction`,
          );
        }
        switch (index) {
          case 0:
            return this.#preserveFd(session, arg, ctx);
          case 1:
            return this.#retrieveFd(session, arg, ctx);
          case 2:
            copyStructFromUser(finishArg, arg);
            await this.#finish(session);
            return 0;
          default:
            return this.#getName(session, arg);
        }
      }),
    release: (file) => {
      const session = file.privateData as LuoSession | undefined;
      return session ? this.#lock.read(() => this.#releaseSession(session)) : undefined;
    },
  };

  /** `liveupdate_reboot()`: the reboot notifier. See {@link LiveUpdateOrchestrator}. */
  async reboot(): Promise<void> {
    if (!this.enabled) return;
    const releaseLock = await this.#lock.lockWrite();
    const sessions = [...this.#outgoing.values()];
    const frozen: LuoSession[] = [];
    let plan: HandoverPlan;
    try {
      // Checked before the kexec already; again under the lock, as a session may have changed.
      plan = this.#plan(this.#kexec.target());
      if (plan.problems.length > 0) {
        throw new KernelError(
          'ENOEXEC',
          `LUO: the loaded kernel cannot read ${plan.problems.join('; ')}`,
        );
      }
    } catch (error) {
      releaseLock();
      throw error;
    }
    try {
      await this.#log.span('luo-freeze', async () => {
        for (const session of sessions) {
          await this.#freezeSession(session, plan.formats);
          frozen.push(session);
        }
      });
    } catch (error) {
      for (const session of frozen.reverse()) await this.#unfreezeFiles(session.files);
      releaseLock();
      throw error;
    }
    try {
      const written = await this.#log.span(
        'luo-serialize',
        () => this.#writeHandover(sessions, plan.abi),
        { sessions: sessions.length, abi: luoAbiCompatible(plan.abi) },
      );
      this.#handover = { ...written, releaseLock };
    } catch (error) {
      for (const session of [...sessions].reverse()) await this.#unfreezeFiles(session.files);
      releaseLock();
      throw error;
    }
    this.#log.info(
      `LUO: serialized ${sessions.length} sessions, ${sessions.reduce((n, s) => n + s.files.length, 0)} files, live update number ${this.liveupdateNumber}`,
    );
  }

  /** A later step of the kexec failed after {@link reboot}: unfreeze and take the handover back. */
  async abortReboot(): Promise<void> {
    const handover = this.#handover;
    if (!handover) return;
    this.#handover = undefined;
    for (const session of [...this.#outgoing.values()].reverse())
      await this.#unfreezeFiles(session.files);
    this.#kho.removeSubtree(handover.fdtPhys);
    for (const blob of handover.blobs) this.#kho.unpreserveFree(blob);
    handover.releaseLock();
    this.#log.warn('LUO: kexec aborted, sessions unfrozen');
  }

  /**
   * Read and check the LUO FDT and the FLB table: both whole preserved allocations, of `luo-v2`
   * (checksums match) or `luo-v1`. Anything wrong panics with a reason starting `LUO:`, as
   * `luo_early_startup()` does; so does a missing `LUO` subtree when another subtree holds a LUO
   * FDT (a damaged name must not become a silent cold start).
   */
  #readIncomingRoot(ctx: ModuleContext): {
    version: LuoAbiVersion;
    liveupdateNumber: bigint;
    sessionHeaderPhys: bigint;
    sessionCrc: number | null;
    flbs: LuoFlbSer[];
  } | null {
    let subtree;
    try {
      subtree = ctx.kho.retrieveSubtree(LUO_FDT_KHO_ENTRY_NAME);
    } catch (error) {
      if (KernelError.isInstance(error) && error.code === 'ENOENT') {
        this.#checkNoLuoFdtElsewhere(ctx);
        return null;
      }
      return ctx.panic(
        `LUO: cannot retrieve the KHO subtree "${LUO_FDT_KHO_ENTRY_NAME}": ${(error as Error).message}`,
      );
    }
    try {
      this.#checkContainer(BigInt(subtree.phys), subtree.size, 'LUO FDT');
      const root = decodeLuoFdt(ctx.memory.read(subtree.phys, subtree.size));
      if (!this.abi.includes(root.version)) {
        throw new LuoAbiError(
          `the LUO FDT is ${luoAbiCompatible(root.version)}, and this kernel reads only ${this.abi.map(luoAbiCompatible).join(', ')}`,
        );
      }
      // luo_flb_setup_incoming(): like the FDT, a bad FLB table is fatal at boot.
      const flbWhere = `luo_flb_header_ser at ${hex(root.flbHeaderPhys)}`;
      this.#checkContainer(root.flbHeaderPhys, LUO_FLB_TABLE_SIZE, flbWhere);
      this.#checkCrc(root.flbHeaderPhys, LUO_FLB_TABLE_SIZE, root.flbCrc, flbWhere, 'luo-flb-crc');
      const flbs = readLuoFlbTable(ctx.memory, Number(root.flbHeaderPhys), root.version);
      ctx.kho.restoreFree(Number(root.flbHeaderPhys));
      ctx.kho.restoreFree(subtree.phys);
      if (root.version === 1) {
        ctx.log.warn('LUO: the incoming handover is luo-v1: it carries no checksums');
      }
      return { ...root, flbs };
    } catch (error) {
      if (error instanceof LuoAbiError) return ctx.panic(`LUO: ${error.message}`);
      throw error;
    }
  }

  /** Panic if a subtree under another name holds a LUO FDT: the `LUO` name was damaged. */
  #checkNoLuoFdtElsewhere(ctx: ModuleContext): void {
    for (const [name, blob] of ctx.kho.incomingSubtrees) {
      const compatible = decodeFdtCompatible(ctx.memory.read(blob.phys, blob.size));
      if (compatible?.some((c) => c.startsWith('luo-'))) {
        ctx.panic(
          `LUO: the KHO subtree "${LUO_FDT_KHO_ENTRY_NAME}" is missing, but subtree "${name}" holds a LUO FDT (compatible ${JSON.stringify(compatible)}): the name is damaged`,
        );
      }
    }
  }

  /**
   * `phys` must be the start of a folio the previous kernel preserved, not yet restored, of the
   * order `kho.allocPreserve(size)` gives: what LUO's writer produces for each structure.
   */
  #checkContainer(phys: bigint, size: number, what: string): void {
    const order =
      phys !== 0n && phys <= BigInt(Number.MAX_SAFE_INTEGER)
        ? this.#kho.incomingOrder(Number(phys))
        : undefined;
    if (order !== getOrder(size)) {
      throw new LuoAbiError(
        `${what}: ${hex(phys)} is not a preserved allocation of ${size} bytes (${order === undefined ? 'no preserved folio starts there' : `the preserved folio there has order ${order}`})`,
      );
    }
  }

  /** The crc32c of `size` bytes at `phys` must be `expected` (v2; `null` in v1: nothing to check). */
  #checkCrc(
    phys: bigint,
    size: number,
    expected: number | null,
    what: string,
    field: string,
  ): void {
    if (expected === null) return;
    const actual = crc32c(this.#memory.read(Number(phys), size));
    if (actual !== expected) {
      throw new LuoAbiError(
        `${what}: ${field} ${hex(expected)} does not match the ${size} bytes there (crc32c ${hex(actual)})`,
      );
    }
  }

  /** `luo_session_deserialize()`: once, at the first open. A failure makes every open `EIO`. */
  async #deserialize(): Promise<void> {
    if (this.#deserialized === 'done') return;
    if (this.#deserialized === 'failed') {
      throw new KernelError(
        'EIO',
        'LUO: the incoming sessions could not be deserialized (see the kernel log)',
      );
    }
    const header = this.#incomingHeader;
    if (header === null) {
      this.#deserialized = 'done';
      return;
    }
    this.flbs.logUnclaimed();
    this.#log.trace('luo-deserialize', 'B');
    try {
      const sessions = this.#readIncomingSessions(header);
      const blobs = [header, ...sessions.flatMap((s) => (s.files.length > 0 ? [s.blob] : []))];
      for (const blob of blobs) this.#kho.restoreFree(blob);
      await checkPreservedFrameClaims(
        sessions.map((s) => s.session),
        this.#calls,
        this.#memory,
      );
      for (const { session } of sessions) this.#incoming.set(session.key, session);
      this.#deserialized = 'done';
      this.#log.info(
        `LUO: deserialized ${sessions.length} incoming sessions (luo-v${this.#incomingVersion})`,
      );
    } catch (error) {
      this.#deserialized = 'failed';
      this.#incoming.clear();
      this.#log.err(`LUO: deserialization failed: ${(error as Error).message}`);
      throw new KernelError('EIO', `LUO: deserialization failed: ${(error as Error).message}`);
    } finally {
      this.#log.trace('luo-deserialize', 'E');
    }
  }

  /**
   * Read, check and build the incoming sessions: the session table and every file array are
   * whole preserved allocations whose checksums (v2) match, with unique addresses; a problem
   * there throws {@link LuoAbiError} (the whole table fails). A file whose `data` is shared with
   * another file or with LUO's own structures, or whose `data_size` is not the preserved folio at
   * `data`, is marked damaged: it alone fails, with `EIO`.
   */
  #readIncomingSessions(
    header: number,
  ): { session: LuoSession; blob: number; files: LuoFileSer[] }[] {
    const version = this.#incomingVersion;
    const where = `luo_session_header_ser at ${hex(header)}`;
    if (this.#memory.contains(header, 8)) {
      const count = this.#memory.readU64(header);
      if (count <= BigInt(this.limits.maxSessions)) {
        const size = luoSessionTableSize(Number(count), version);
        this.#checkContainer(BigInt(header), size, where);
        this.#checkCrc(BigInt(header), size, this.#incomingSessionCrc, where, 'luo-session-crc');
      }
    }
    const table = readLuoSessionTable(this.#memory, header, this.limits.maxSessions, version);
    const structures = new Map<bigint, string>([[BigInt(header), where]]);
    const sessions = table.map((entry) => {
      const session = this.#newSession(entry.name, true);
      const what = `session "${session.label}": luo_file_ser[${entry.count}] at ${hex(entry.files)}`;
      if (entry.count === 0n) {
        if (entry.files !== 0n || entry.filesCrc !== 0) {
          throw new LuoAbiError(`${what}: an empty session has files 0 and files_crc 0`);
        }
        return { session, blob: 0, files: [] as LuoFileSer[] };
      }
      if (entry.count > BigInt(this.limits.maxFilesPerSession)) {
        throw new LuoAbiError(
          `${what}: count ${entry.count} is more than the ${this.limits.maxFilesPerSession} allowed`,
        );
      }
      const size = luoFileTableSize(Number(entry.count), version);
      this.#checkContainer(entry.files, size, what);
      const other = structures.get(entry.files);
      if (other !== undefined) throw new LuoAbiError(`${what}: is also ${other}`);
      structures.set(entry.files, what);
      this.#checkCrc(entry.files, size, version === 2 ? entry.filesCrc : null, what, 'files_crc');
      const files = readLuoFileTable(
        this.#memory,
        Number(entry.files),
        Number(entry.count),
        this.limits.maxFilesPerSession,
        version,
      );
      return { session, blob: Number(entry.files), files };
    });
    const byData = new Map<bigint, LuoFile>();
    for (const { session, files } of sessions) {
      session.files = files.map((f) => {
        const handler = this.registry.byCompatible(f.compatible);
        if (!handler) {
          throw new LuoAbiError(
            `session "${session.label}" token ${f.token}: no file handler registered for compatible "${f.compatible}"`,
          );
        }
        const luoFile = new LuoFile(session.handle, handler, f.token, null, f.data, f.compatible);
        luoFile.dataSize = f.dataSize;
        luoFile.dataCrc = f.dataCrc;
        const name = `session "${session.label}" token ${f.token}`;
        const damage = (reason: string) => {
          luoFile.damage ??= `${name}: luo_file_ser data ${hex(f.data)}: ${reason}`;
        };
        const structure = structures.get(f.data);
        if (structure !== undefined) damage(`is LUO's ${structure}`);
        const twin = f.data === 0n ? undefined : byData.get(f.data);
        if (twin) {
          damage(`is also the data of token ${twin.token}`);
          twin.damage ??= `luo_file_ser data ${hex(f.data)}: is also the data of ${name}`;
        }
        if (f.data !== 0n) byData.set(f.data, luoFile);
        const sizeProblem = this.#checksums.sizeProblem(f.data, f);
        if (sizeProblem !== undefined) damage(sizeProblem);
        return luoFile;
      });
    }
    for (const { session } of sessions) {
      for (const luoFile of session.files) {
        if (luoFile.damage) this.#log.err(`LUO: ${luoFile.damage}; it will fail with EIO`);
      }
    }
    return sessions;
  }

  /**
   * Before an incoming file's serialized state goes to its handler (`retrieve`, `finish`):
   * `EIO` for a damaged file, and the crc32c check (v2), which marks the file damaged on a
   * mismatch. Checked once; nothing else writes the state before its handler runs.
   */
  #verifyIncoming(luoFile: LuoFile): void {
    if (!luoFile.damage && !luoFile.verified) {
      const problem = this.#checksums.crcProblem(luoFile.serializedData, luoFile, 'luo_file_ser');
      if (problem !== undefined) {
        luoFile.damage = `token ${luoFile.token} (${luoFile.handler.compatible}): ${problem}`;
        this.#log.err(`LUO: ${luoFile.damage}`);
      }
    }
    if (luoFile.damage) throw new KernelError('EIO', `LUO: ${luoFile.damage}`);
    luoFile.verified = true;
  }

  async #createSession(arg: Uint8Array | null, ctx: SyscallContext): Promise<number> {
    const request = copyStructFromUser(createSessionArg, arg);
    return this.#withFd(ctx.process, async (fd) => {
      const name = sessionName(request.name);
      if (this.#outgoing.size >= this.limits.maxSessions) {
        throw new KernelError(
          'ENOSPC',
          `LUO: ${this.limits.maxSessions} outgoing sessions is the limit (liveupdate.max_sessions=)`,
        );
      }
      const session = this.#newSession(name, false);
      if (this.#outgoing.has(session.key))
        throw new KernelError('EEXIST', `LUO: session "${session.label}" already exists`);
      this.#outgoing.set(session.key, session);
      copyStructToUser(createSessionArg, arg!, { ...request, fd });
      return this.#sessionFile(session);
    });
  }

  async #retrieveSession(arg: Uint8Array | null, ctx: SyscallContext): Promise<number> {
    const request = copyStructFromUser(retrieveSessionArg, arg);
    return this.#withFd(ctx.process, async (fd) => {
      const name = request.name.subarray(0, strnlen(request.name, LIVEUPDATE_SESSION_NAME_LENGTH));
      const session = this.#incoming.get(sessionNameKey(name));
      if (!session) {
        throw new KernelError('ENOENT', `LUO: no incoming session "${printableSessionName(name)}"`);
      }
      if (session.retrieved)
        throw new KernelError('EINVAL', `LUO: session "${session.label}" was already retrieved`);
      session.retrieved = true;
      copyStructToUser(retrieveSessionArg, arg!, { ...request, fd });
      return this.#sessionFile(session);
    });
  }

  /**
   * Take an fd first, as the kernel does (`get_unused_fd_flags`), so a full fd table fails with
   * `EMFILE` before anything happens; `work` returns the file (a reference it gives away) to
   * install there, and the fd is given back if it throws.
   */
  async #withFd(
    process: KernelProcess,
    work: (fd: number) => Promise<KernelFile>,
  ): Promise<number> {
    const fd = process.files.reserve(true);
    try {
      process.files.fill(fd, await work(fd));
      return 0;
    } catch (error) {
      process.files.unreserve(fd);
      throw error;
    }
  }

  #sessionFile(session: LuoSession): KernelFile {
    return this.#vfs.anonInodeGetFile(
      `[luo_session] ${session.label}`,
      this.#sessionOperations,
      session,
    );
  }

  /** `luo_preserve_file()`, with the checks in upstream's order (spec §5). */
  #preserveFd(session: LuoSession, arg: Uint8Array | null, ctx: SyscallContext): Promise<number> {
    const request = copyStructFromUser(preserveFdArg, arg);
    return session.mutex.run(async () => {
      if (session.fileByToken(request.token)) {
        throw new KernelError(
          'EEXIST',
          `LUO: token ${request.token} is already used in session "${session.label}"`,
        );
      }
      if (session.files.length >= this.limits.maxFilesPerSession) {
        throw new KernelError(
          'ENOSPC',
          `LUO: ${this.limits.maxFilesPerSession} files is the per-session limit (liveupdate.max_files=)`,
        );
      }
      const file = this.#vfs.fget(ctx.process.files.get(request.fd));
      try {
        const handler = await this.#handlerFor(file);
        const id = handler.getId
          ? await callHandler(this.#calls, handler, 'getId', () => handler.getId!(file))
          : file;
        if (this.#ids.has(id)) {
          throw new KernelError(
            'EBUSY',
            `LUO: ${file.path} is already preserved, or retrieved and not finished`,
          );
        }
        const luoFile = new LuoFile(
          session.handle,
          handler,
          request.token,
          file,
          0n,
          this.#formatFor(handler, this.#kexec.target()) ?? handler.compatible,
        );
        luoFile.id = id;
        this.#ids.set(id, luoFile);
        try {
          // luo_flb_file_preserve() first, so the file's preserve finds its FLBs preserved.
          await this.flbs.filePreserve(handler);
          try {
            const args = luoFile.args();
            await callHandler(this.#calls, handler, 'preserve', () => handler.preserve(args));
            luoFile.serializedData = checkedData(handler, args.serializedData);
            luoFile.privateData = args.privateData;
          } catch (error) {
            await this.flbs.fileUnpreserve(handler);
            throw error;
          }
        } catch (error) {
          this.#ids.delete(id);
          throw error;
        }
        session.files.push(luoFile);
        return 0;
      } catch (error) {
        await this.#vfs.fput(file);
        throw error;
      }
    });
  }

  async #handlerFor(file: KernelFile): Promise<FileHandler> {
    for (const handler of this.registry.handlers) {
      if (
        await callHandler(this.#calls, handler, 'canPreserve', () =>
          handler.canPreserve(handler, file),
        )
      ) {
        return handler;
      }
    }
    throw new KernelError('ENOENT', `LUO: no file handler can preserve ${file.path}`);
  }

  /** `luo_retrieve_file()`: idempotent per token; a failure is sticky. */
  #retrieveFd(session: LuoSession, arg: Uint8Array | null, ctx: SyscallContext): Promise<number> {
    const request = copyStructFromUser(retrieveFdArg, arg);
    return this.#withFd(ctx.process, (fd) =>
      session.mutex.run(async () => {
        const luoFile = session.fileByToken(request.token);
        if (!luoFile)
          throw new KernelError(
            'ENOENT',
            `LUO: no token ${request.token} in session "${session.label}"`,
          );
        const file = await this.#retrieveLocked(luoFile);
        copyStructToUser(retrieveFdArg, arg!, { ...request, fd });
        return this.#vfs.fget(file);
      }),
    );
  }

  /**
   * The file of `luoFile`, retrieving it under its lock the first time (RETRIEVE_FD and
   * `getFileIncoming`); the errno of a failed retrieve is sticky.
   */
  #retrieveLocked(luoFile: LuoFile): Promise<KernelFile> {
    return luoFile.lock.run(async () => {
      if (luoFile.retrieveStatus < 0) {
        throw new KernelError(
          errnoName(-luoFile.retrieveStatus),
          `LUO: token ${luoFile.token} failed to retrieve before`,
        );
      }
      if (luoFile.retrieveStatus === 0) {
        await this.#log.span('luo-retrieve', () => this.#retrieveOnce(luoFile), {
          compatible: luoFile.handler.compatible,
        });
      }
      if (!luoFile.file)
        throw new KernelError('ENOENT', `LUO: token ${luoFile.token} has finished`);
      return luoFile.file;
    });
  }

  async #retrieveOnce(luoFile: LuoFile): Promise<void> {
    const { handler } = luoFile;
    const args = luoFile.args();
    luoFile.retrieving = true;
    try {
      this.#verifyIncoming(luoFile);
      await callHandler(this.#calls, handler, 'retrieve', () => handler.retrieve(args));
      if (!(args.file instanceof KernelFile)) {
        throw new KernelError('EIO', `LUO: ${handler.compatible}: retrieve did not set a file`);
      }
    } catch (error) {
      const errno = KernelError.isInstance(error) ? error.errno : ERRNO.EIO;
      luoFile.retrieveStatus = -errno;
      this.#failure(
        `LUO: session "${luoFile.session.name}" token ${luoFile.token} (${luoFile.compatible}): retrieve failed with ${errnoName(errno)}: ${(error as Error)?.message ?? String(error)}`,
      );
      throw error;
    } finally {
      luoFile.retrieving = false;
    }
    const file = args.file;
    luoFile.file = file;
    luoFile.retrieveStatus = 1;
    const id = handler.getId
      ? await callHandler(this.#calls, handler, 'getId', () => handler.getId!(file))
      : file;
    luoFile.id = id;
    this.#ids.set(id, luoFile);
  }

  /** `luo_file_finish()`: all `canFinish` or nothing, then `finish` in reverse. */
  async #finish(session: LuoSession): Promise<void> {
    await session.mutex.run(async () => {
      if (session.files.length === 0) return;
      await this.#log.span('luo-finish', () => this.#finishFiles(session), {
        files: session.files.length,
      });
    });
    if ([...this.#incoming.values()].every((s) => s.files.length === 0)) {
      this.#kho.reclaimUnrestored('LUO: every incoming session has finished');
    }
  }

  async #finishFiles(session: LuoSession): Promise<void> {
    for (const luoFile of session.files) {
      const { handler } = luoFile;
      if (luoFile.retrieveStatus === 0) {
        try {
          this.#verifyIncoming(luoFile);
        } catch {
          // Damaged: logged; its handler is not called (below).
        }
      }
      if (!handler.canFinish || luoFile.damage) continue;
      const refused = `LUO: session "${session.label}" token ${luoFile.token} (${luoFile.compatible}): finish refused`;
      let ok: boolean;
      try {
        ok = await luoFile.lock.run(() =>
          callHandler(this.#calls, handler, 'canFinish', () => handler.canFinish!(luoFile.args())),
        );
      } catch (error) {
        this.#failure(
          `${refused}: canFinish failed: ${(error as Error)?.message ?? String(error)}`,
        );
        throw error;
      }
      if (!ok) {
        const reason = `${refused}: canFinish says it cannot finish yet`;
        this.#failure(reason);
        throw new KernelError('EBUSY', reason);
      }
    }
    for (const luoFile of [...session.files].reverse()) {
      const { handler } = luoFile;
      if (luoFile.damage) {
        this.#failure(
          `LUO: session "${session.label}" token ${luoFile.token} (${luoFile.compatible}) is damaged: ${handler.compatible}'s finish is not called; its preserved memory stays reserved (${luoFile.damage})`,
        );
      } else {
        await luoFile.lock.run(() =>
          callVoidHandler(this.#calls, handler, 'finish', () => handler.finish(luoFile.args())),
        );
      }
      await this.flbs.fileFinish(handler);
      await this.#drop(luoFile);
    }
    session.files = [];
  }

  #getName(session: LuoSession, arg: Uint8Array | null): number {
    const request = copyStructFromUser(getNameArg, arg);
    if (request.reserved !== 0)
      throw new KernelError('EINVAL', 'LUO: GET_NAME reserved field must be 0');
    copyStructToUser(getNameArg, arg!, { ...request, name: session.name });
    return 0;
  }

  /** `luo_session_release()`. */
  async #releaseSession(session: LuoSession): Promise<void> {
    if (!session.incoming) {
      await session.mutex.run(async () => {
        for (const luoFile of [...session.files].reverse()) {
          const { handler } = luoFile;
          await callVoidHandler(this.#calls, handler, 'unpreserve', () =>
            handler.unpreserve(luoFile.args()),
          );
          await this.flbs.fileUnpreserve(handler);
          await this.#drop(luoFile);
        }
        session.files = [];
      });
      this.#outgoing.delete(session.key);
      return;
    }
    try {
      await this.#finish(session);
      this.#incoming.delete(session.key);
    } catch (error) {
      this.#log.warn(
        `LUO: closing session "${session.label}" could not finish it (${(error as Error).message}); it stays until the next reboot`,
      );
    }
  }

  #newSession(name: Uint8Array, incoming: boolean): LuoSession {
    return new LuoSession(name, incoming, (session) => this.#fileSession(session));
  }

  /** The `args.session` of `session`'s files: the cross-file lookups. */
  #fileSession(session: LuoSession): LiveUpdateFileSession {
    return {
      name: session.label,
      incoming: session.incoming,
      getTokenOutgoing: (file) => {
        const luoFile = session.incoming ? undefined : this.#outgoingFileOf(session, file);
        if (!luoFile) {
          throw new KernelError(
            'ENOENT',
            `LUO: ${file.path} is not preserved in session "${session.label}"`,
          );
        }
        return luoFile.token;
      },
      getFileIncoming: async (token) => {
        const luoFile = session.incoming ? session.fileByToken(token) : undefined;
        if (!luoFile) {
          throw new KernelError(
            'ENOENT',
            `LUO: no incoming token ${token} in session "${session.label}"`,
          );
        }
        // Every retrieve runs under the session mutex, so a file being retrieved that is asked
        // for again is in the same chain of retrieves: waiting on its lock would never end.
        if (luoFile.retrieving) {
          throw new KernelError(
            'EDEADLK',
            `LUO: token ${token} in session "${session.label}" is being retrieved; the files depend on each other in a cycle`,
          );
        }
        return this.#retrieveLocked(luoFile);
      },
    };
  }

  /**
   * The file of `session` that `file` is, by identity as the double-preservation check: a
   * handler that takes `file` and gives it the id of a preserved file of this session.
   */
  #outgoingFileOf(session: LuoSession, file: KernelFile): LuoFile | undefined {
    for (const luoFile of session.files) {
      if (luoFile.file === file) return luoFile;
      const { handler } = luoFile;
      if (!handler.getId || luoFile.id === undefined) continue;
      let id;
      try {
        if (!handler.canPreserve(handler, file)) continue;
        id = handler.getId(file);
      } catch (error) {
        if (KernelError.isInstance(error)) throw error;
        this.#log.err(`LUO: ${handler.compatible}: getId threw ${(error as Error)?.message}`);
        throw new KernelError('EIO', `${handler.compatible}: getId failed`, { cause: error });
      }
      if (id === luoFile.id) return luoFile;
    }
    return undefined;
  }

  /** Forget a file: its identity and LUO's reference. */
  async #drop(luoFile: LuoFile): Promise<void> {
    if (luoFile.id !== undefined) this.#ids.delete(luoFile.id);
    luoFile.id = undefined;
    const file = luoFile.file;
    luoFile.file = null;
    if (file) await this.#vfs.fput(file);
  }

  /**
   * The first of `handler`'s formats `target` reads: what it writes for that kernel. With no
   * kernel loaded, its own `compatible`; `undefined` when the target reads none of them.
   */
  #formatFor(handler: FileHandler, target: KexecTarget | undefined): string | undefined {
    if (!target) return handler.compatible;
    return handlerWrites(handler).find((format) => target.reads.has(format));
  }

  /**
   * What this kernel would write for `target`: each outgoing file's format, the LUO ABI version,
   * and everything `target` could not read (one line each, naming session, token and formats).
   */
  #plan(target: KexecTarget | undefined): HandoverPlan {
    const formats = new Map<LuoFile, string>();
    const problems: string[] = [];
    const sessions = [...this.#outgoing.values()];
    const flbs = this.flbs.outgoingTable();
    if (!target) return { formats, problems, abi: this.abi[0]! };
    // With nothing to hand over, LUO writes an empty handover the target may ignore.
    const readable = this.abi.find((v) => target.reads.has(luoAbiCompatible(v)));
    const abi = readable ?? this.abi[0]!;
    if (sessions.length > 0 || flbs.length > 0) {
      if (readable === undefined) {
        problems.push(
          `the LUO handover: this kernel writes ${this.abi.map(luoAbiCompatible).join(', ')}; it reads none of them`,
        );
      } else {
        // Its LUO would stay off and never deserialize: every session would be lost.
        const cmdline = new CommandLine(target.cmdline);
        for (const [key, what] of [
          ['kho', 'KHO'],
          ['liveupdate', 'LUO'],
        ] as const) {
          if (!cmdline.bool(key, false)) {
            problems.push(
              `the LUO handover: its command line does not turn ${what} on (${key}=on)`,
            );
          }
        }
      }
    }
    for (const session of sessions) {
      for (const luoFile of session.files) {
        const format = this.#formatFor(luoFile.handler, target);
        if (format !== undefined) {
          formats.set(luoFile, format);
        } else {
          problems.push(
            `session "${session.label}" token ${luoFile.token}: ${luoFile.handler.compatible} writes ${handlerWrites(luoFile.handler).join(', ')}; it reads none of them`,
          );
        }
      }
    }
    for (const flb of flbs) {
      if (!target.reads.has(flb.name)) problems.push(`FLB ${flb.name}: it does not read it`);
    }
    return { formats, problems, abi };
  }

  /**
   * `LIVEUPDATE_IOCTL_CHECK_KEXEC`: every kexec check (the kernel's, LUO's, other modules') against
   * the loaded kernel, as `reboot` would run them; changes nothing.
   */
  async #checkKexec(arg: Uint8Array | null): Promise<number> {
    const request = copyStructFromUser(checkKexecArg, arg);
    if (request.flags !== 0) {
      throw new KernelError('EINVAL', `LUO: CHECK_KEXEC flags ${hex(request.flags)} must be 0`);
    }
    const { version, problems } = await this.#kexec.check();
    const encoder = new TextEncoder();
    const versionBytes = new Uint8Array(LIVEUPDATE_CHECK_VERSION_LENGTH);
    versionBytes.set(encoder.encode(version).subarray(0, LIVEUPDATE_CHECK_VERSION_LENGTH - 1));
    const report = new Uint8Array(LIVEUPDATE_CHECK_REPORT_LENGTH);
    let used = 0;
    for (const problem of problems) {
      const line = encoder.encode(`${used === 0 ? '' : '\n'}${problem}`);
      if (used + line.length > LIVEUPDATE_CHECK_REPORT_LENGTH - 1) break;
      report.set(line, used);
      used += line.length;
    }
    copyStructToUser(checkKexecArg, arg!, {
      ...request,
      status: problems.length === 0 ? 0 : ERRNO.ENOEXEC,
      nr_problems: problems.length,
      version: versionBytes,
      report,
    });
    return 0;
  }

  /** The check before a kexec (see `ModuleContext.kexec`): {@link #plan}'s problems. */
  readonly kexecCheck = {
    name: 'liveupdate',
    check: (target: KexecTarget): Promise<readonly string[]> =>
      this.#lock.read(async () => this.#plan(target).problems),
  };

  /** `luo_file_freeze()` of one session: FIFO; on failure unfreeze those before, forwards. */
  async #freezeSession(session: LuoSession, formats: ReadonlyMap<LuoFile, string>): Promise<void> {
    const done: LuoFile[] = [];
    for (const luoFile of session.files) {
      const { handler } = luoFile;
      const format = formats.get(luoFile) ?? luoFile.compatible;
      if (format !== luoFile.compatible && !handler.freeze) {
        // The registry refuses a handler that writes several formats without freeze.
        throw new KernelError(
          'EIO',
          `LUO: ${handler.compatible} cannot rewrite its state as ${format}`,
        );
      }
      luoFile.compatible = format;
      if (handler.freeze) {
        try {
          await luoFile.lock.run(async () => {
            const args = luoFile.args();
            await callHandler(this.#calls, handler, 'freeze', () => handler.freeze!(args));
            luoFile.serializedData = checkedData(handler, args.serializedData);
          });
        } catch (error) {
          await this.#unfreezeFiles(done);
          this.#log.warn(
            `LUO: ${handler.compatible}: freeze of token ${luoFile.token} in "${session.label}" failed: ${(error as Error).message}`,
          );
          throw error;
        }
      }
      done.push(luoFile);
    }
  }

  async #unfreezeFiles(files: readonly LuoFile[]): Promise<void> {
    for (const luoFile of files) {
      const { handler } = luoFile;
      if (!handler.unfreeze) continue;
      await luoFile.lock.run(() =>
        callVoidHandler(this.#calls, handler, 'unfreeze', () => handler.unfreeze!(luoFile.args())),
      );
    }
  }

  /**
   * The `luo_file_ser` of an outgoing file, after its `freeze`: when `serializedData` is the start
   * of a folio this kernel preserves (what `kho.allocPreserve` returns), the checksum of that
   * whole folio. Refuses a `data` another file already has (`owners`): the next kernel would
   * refuse both.
   */
  #fileEntry(session: LuoSession, luoFile: LuoFile, owners: Map<bigint, string>): LuoFileSer {
    const data = luoFile.serializedData;
    const name = `session "${session.label}" token ${luoFile.token}`;
    const owner = data === 0n ? undefined : owners.get(data);
    if (owner !== undefined) {
      throw new KernelError(
        'EINVAL',
        `LUO: ${luoFile.handler.compatible}: ${name} has the serializedData ${hex(data)} of ${owner}`,
      );
    }
    if (data !== 0n) owners.set(data, name);
    return {
      compatible: luoFile.compatible,
      data,
      token: luoFile.token,
      ...this.#checksums.of(data),
    };
  }

  /**
   * Write the LUO ABI, `luo-v2` (or `luo-v1` for a kernel that reads only that), into
   * KHO-preserved memory and publish it as the `LUO` subtree.
   */
  #writeHandover(
    sessions: readonly LuoSession[],
    version: LuoAbiVersion,
  ): { blobs: number[]; fdtPhys: number } {
    const blobs: number[] = [];
    const preserve = (size: number): number => {
      const phys = this.#kho.allocPreserve(size);
      blobs.push(phys);
      return phys;
    };
    try {
      const crcOf = (phys: number, size: number) => crc32c(this.#memory.read(phys, size));
      const owners = new Map<bigint, string>();
      const table = sessions.map((session) => {
        let files = 0n;
        let filesCrc = 0;
        if (session.files.length > 0) {
          const entries = session.files.map((f) => this.#fileEntry(session, f, owners));
          const size = luoFileTableSize(entries.length, version);
          const phys = preserve(size);
          writeLuoFileTable(this.#memory, phys, entries, version);
          files = BigInt(phys);
          filesCrc = crcOf(phys, size);
        }
        return { name: session.name, files, count: BigInt(session.files.length), filesCrc };
      });
      const headerSize = luoSessionTableSize(table.length, version);
      const header = preserve(headerSize);
      writeLuoSessionTable(this.#memory, header, table, version);
      const flbHeader = preserve(LUO_FLB_TABLE_SIZE);
      writeLuoFlbTable(this.#memory, flbHeader, this.flbs.outgoingTable(), version);
      const fdt = encodeLuoFdt({
        version,
        liveupdateNumber: this.liveupdateNumber,
        sessionHeaderPhys: BigInt(header),
        sessionCrc: crcOf(header, headerSize),
        flbHeaderPhys: BigInt(flbHeader),
        flbCrc: crcOf(flbHeader, LUO_FLB_TABLE_SIZE),
      });
      const fdtPhys = preserve(fdt.length);
      this.#memory.write(fdtPhys, fdt);
      this.#kho.addSubtree(LUO_FDT_KHO_ENTRY_NAME, fdtPhys, fdt.length);
      return { blobs, fdtPhys };
    } catch (error) {
      for (const blob of blobs) this.#kho.unpreserveFree(blob);
      throw error;
    }
  }
}

/**
 * A session name from `CREATE_SESSION`: the 1..63 bytes before a NUL (`EINVAL` otherwise), of
 * any value, as upstream's `strnlen` check takes them.
 */
function sessionName(raw: Uint8Array): Uint8Array {
  const length = strnlen(raw, LIVEUPDATE_SESSION_NAME_LENGTH);
  if (length === 0 || length === LIVEUPDATE_SESSION_NAME_LENGTH) {
    throw new KernelError(
      'EINVAL',
      `LUO: a session name must be 1-${LIVEUPDATE_SESSION_NAME_LENGTH - 1} bytes and NUL-terminated`,
    );
  }
  return raw.slice(0, length);
}

function checkedData(handler: FileHandler, data: FileOpArgs['serializedData']): bigint {
  if (typeof data !== 'bigint' || data < 0n || data > 0xffff_ffff_ffff_ffffn) {
    throw new KernelError(
      'EIO',
      `LUO: ${handler.compatible} set serializedData to ${String(data)}, not a u64 bigint`,
    );
  }
  return data;
}

function errnoName(errno: number): ErrnoName {
  const name = Object.keys(ERRNO).find((key) => ERRNO[key as ErrnoName] === errno);
  return name && isErrnoName(name) ? name : 'EIO';
}
