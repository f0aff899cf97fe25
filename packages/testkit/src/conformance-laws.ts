import { inspect, isDeepStrictEqual } from 'node:util';
import { LiveUpdateDevice, type HandlerOp, type LiveUpdateSession } from '@liveupdate/core';
import { KernelError, O_RDWR, type ErrnoName, type Process } from '@liveupdate/machine';
import { describeError } from './describe-error.js';
import { clearFault, faultStatus, injectFault } from './fault-injection.js';
import {
  HANDLER_MACHINE_KEYS,
  bootHandlerMachine,
  checkOptions,
  type HandlerMachineOptions,
} from './handler-machine.js';
import type { LiveUpdateHarness } from './live-update-harness.js';
import { probeCanPreserve, sameFile } from './testkit-probes.js';
import {
  statsDifferences,
  testkitStats,
  type TestkitStat,
  type TestkitStats,
} from './testkit-stats.js';

/**
 * The files of one session a {@link ConformanceOptions.createSession} made: preserved in this
 * order, the file under test under the token a law picks, the others (its dependencies) under
 * tokens of their own.
 */
export interface ConformanceSessionFiles {
  /** Every file to preserve, in preservation order, each named for the callbacks. */
  readonly files: readonly { readonly name: string; readonly fd: number }[];
  /** The `name` of the file the laws check; the others are preserved and retrieved with it. */
  readonly fileUnderTest: string;
}

/** The other files of the file under test's session, by name, as the callbacks reach them. */
export interface ConformanceFiles {
  /**
   * The fd of the file `name` in this process: the one `createSession` made, or, after a live
   * update, the one `RETRIEVE_FD` of its token gives (retrieved on the first ask, once).
   */
  fd(name: string): Promise<number>;
}

/** What the conformance suite needs to know about the handler under test. */
export interface ConformanceOptions extends HandlerMachineOptions {
  /** The title of the `describe` block. */
  readonly name: string;
  /**
   * Make a file the handler preserves, in `process`, and return its fd. Called several times per
   * law; each file should be independent of the others. Give this or `createSession`.
   */
  createFile?(process: Process): Promise<number>;
  /**
   * For a handler whose files need other files in the same session (a device file its iommufd
   * and guest memory): make the file under test and every file it depends on, in `process`, and
   * list them in the order they must be preserved. Called several times per law; each call's
   * files should be independent of the other calls'. Give this or `createFile`.
   */
  createSession?(process: Process): Promise<ConformanceSessionFiles>;
  /**
   * The file's content as a value to compare: the suite compares what it reads before a live
   * update with what it reads after with `util.isDeepStrictEqual`. Return what identifies the
   * file's state for your handler (bytes, size, flags, …). `files` reaches the other files of
   * its session (with `createSession`).
   */
  readContent(process: Process, fd: number, files: ConformanceFiles): Promise<unknown>;
  /**
   * Change the file's content the way a workload may while the file is preserved (after
   * `PRESERVE_FD`, before the reboot), e.g. write inside its size. When given, the laws check
   * that the next kernel gets the content as it was at the reboot, and that a file is usable again
   * after an aborted reboot.
   *
   * It must be repeatable: the laws call it again on a file it has already changed — after an
   * aborted reboot, on the file retrieved after each of three live updates in a row (preserved
   * again for the next one), and on one of two fds `RETRIEVE_FD` gave for one token (the change
   * must show through the other) — so it must succeed whatever it did before (write at a fixed
   * offset, take what is there; do not assume a fresh file, nor grow it each time past what your
   * handler can preserve).
   */
  mutate?(process: Process, fd: number, files: ConformanceFiles): Promise<void>;
  /**
   * Before each `FINISH` of a session in which the law retrieved the file under test: do what
   * userspace must do before the handler's `canFinish` agrees (e.g. reclaim preserved HWPTs,
   * bind a device to the retrieved iommufd and move it off the restored domain). Called once
   * per retrieved file under test of that session.
   */
  prepareFinish?(process: Process, fd: number, files: ConformanceFiles): Promise<void>;
  /**
   * Laws that cannot hold for this handler by design, by law id, each with the reason. Such a law
   * is still run: when it fails, the suite reports it skipped with the reason (and the failure);
   * when it holds, it fails, so that a stale exception is removed. Undeclared failures fail.
   */
  readonly exceptions?: Readonly<Partial<Record<ConformanceLawId, string>>>;
}

const CONFORMANCE_KEYS = [
  ...HANDLER_MACHINE_KEYS,
  'name',
  'createFile',
  'createSession',
  'readContent',
  'mutate',
  'prepareFinish',
  'exceptions',
];

/** Check `options` of `describeConformance`/`checkConformanceLaw`; a `TypeError` says what is wrong. */
export function checkConformanceOptions(
  caller: string,
  options: unknown,
): asserts options is ConformanceOptions {
  checkOptions(caller, options, CONFORMANCE_KEYS, {
    required: ['readContent'],
    optional: ['createFile', 'createSession', 'mutate', 'prepareFinish'],
  });
  const { name, createFile, createSession, exceptions } = options as unknown as Record<
    string,
    unknown
  >;
  if (typeof name !== 'string' || name === '') {
    throw new TypeError(`${caller}: name must be the title of the suite, got ${inspect(name)}`);
  }
  if ((createFile === undefined) === (createSession === undefined)) {
    throw new TypeError(
      `${caller}: give createFile (one file per session) or createSession (a file and the files it depends on), exactly one of them`,
    );
  }
  if (exceptions === undefined) return;
  if (typeof exceptions !== 'object' || exceptions === null) {
    throw new TypeError(
      `${caller}: exceptions must map law ids to reasons, got ${inspect(exceptions)}`,
    );
  }
  for (const [law, reason] of Object.entries(exceptions)) {
    if (!LAWS.some((l) => l.id === law)) {
      throw new TypeError(
        `${caller}: exceptions names an unknown law ${inspect(law)}; the laws are ${LAWS.map((l) => l.id).join(', ')}`,
      );
    }
    if (typeof reason !== 'string' || reason.trim() === '') {
      throw new TypeError(
        `${caller}: the exception of law ${law} must say why it cannot hold, got ${inspect(reason)}`,
      );
    }
  }
}

/** The outcome of one law. */
export interface ConformanceVerdict {
  readonly law: ConformanceLawId;
  readonly title: string;
  readonly status: 'passed' | 'failed' | 'skipped';
  /** Why it failed, or why it was skipped. */
  readonly message?: string;
  /** The error behind a failure, when there was one (a rejected syscall, a throw of a callback). */
  readonly cause?: unknown;
}

/** A law of the handler contract that the conformance suite checks, one test each. */
export interface ConformanceLaw {
  readonly id: ConformanceLawId;
  /** The test name: a sentence about the handler. */
  readonly title: string;
}

/** A law's identifier, for {@link checkConformanceLaw}. */
export type ConformanceLawId =
  | 'can-preserve'
  | 'preserve-unpreserve'
  | 'preserve-once'
  | 'freeze-unfreeze'
  | 'retrieve-content'
  | 'retrieve-twice'
  | 'finish-unretrieved'
  | 'void-ops'
  | 'three-updates'
  | 'no-outside-state'
  | 'reachable';

/** A law fails: the message says what was expected and what happened. */
class ConformanceViolation extends Error {
  override readonly name = 'ConformanceViolation';
}

/** A law does not apply to this handler (an optional op it does not implement). */
class LawSkipped extends Error {
  override readonly name = 'LawSkipped';
}

/** How many times the `canPreserve` law asks, and how long one answer may take on average. */
const CAN_PRESERVE_CALLS = 100;
/** A law that runs longer than this has hung: a handler op or a callback never settled. */
const LAW_DEADLINE_MS = 30_000;
const SESSION = 'conformance';
const POISON_HINT =
  '\n  (every kernel boots with page_poison=on: memory that was not preserved reads as 0xaa bytes)';
/** The counts that must come back after a file is closed and everything about it is undone. */
const HELD: readonly TestkitStat[] = ['framesAllocated', 'openFiles'];
/**
 * After FINISH in the next kernel, what must not grow. Allocated frames may shrink: a kernel may
 * hold incoming state from boot on (the IOMMU driver's restored page tables) that FINISH frees.
 */
const HELD_NO_GROWTH: readonly TestkitStat[] = ['framesAllocated'];
const PRESERVED: readonly TestkitStat[] = ['khoPreservedFolios', 'khoPreservedFrames', 'openFiles'];

/**
 * The tokens of a file under test's dependencies: the `i`th other file of the session preserved
 * with the file under `token` gets `token + DEPENDENCY_TOKENS * (i + 1)`, clear of the small
 * tokens the laws give the files under test.
 */
const DEPENDENCY_TOKENS = 1n << 32n;

/**
 * A file under test and the files of its session: made by `createFile`/`createSession` in this
 * kernel, or retrieved in the next (its other files then retrieved on demand).
 */
class FileGroup implements ConformanceFiles {
  /** The file under test's fd in this process. */
  readonly underTestFd: number;
  readonly #process: Process;
  /** Every file, in preservation order; `fd` undefined until retrieved. */
  readonly #files: { name: string; fd: number | undefined; underTest: boolean }[];
  readonly #session: LiveUpdateSession | undefined;
  readonly #token: bigint | undefined;

  constructor(
    process: Process,
    fd: number,
    files: { name: string; fd: number | undefined; underTest: boolean }[],
    retrievedFrom?: { session: LiveUpdateSession; token: bigint },
  ) {
    this.#process = process;
    this.underTestFd = fd;
    this.#files = files;
    this.#session = retrievedFrom?.session;
    this.#token = retrievedFrom?.token;
  }

  /** The same files, retrieved from `session` where the file under test has `token`. */
  retrieved(process: Process, session: LiveUpdateSession, token: bigint, fd: number): FileGroup {
    const files = this.#files.map((f) => ({ ...f, fd: f.underTest ? fd : undefined }));
    return new FileGroup(process, fd, files, { session, token });
  }

  /** The token of each file when the file under test is preserved under `token`. */
  tokens(token: bigint): { name: string; underTest: boolean; token: bigint }[] {
    let dependency = 0n;
    return this.#files.map(({ name, underTest }) => ({
      name,
      underTest,
      token: underTest ? token : token + DEPENDENCY_TOKENS * ++dependency,
    }));
  }

  get dependencies(): number {
    return this.#files.length - 1;
  }

  async fd(name: string): Promise<number> {
    const file = this.#files.find((f) => f.name === name);
    if (!file) {
      fail(
        `the session has no file ${inspect(name)}; createSession named ${this.#files.map((f) => inspect(f.name)).join(', ')}`,
      );
    }
    if (file.fd === undefined) {
      const token = this.tokens(this.#token!).find((t) => t.name === name)!.token;
      file.fd = await step(`RETRIEVE_FD of ${name} (token ${token})`, () =>
        this.#session!.retrieveFd(token),
      );
    }
    return file.fd;
  }

  /** The fds of this process for all the files, retrieving the ones not retrieved yet. */
  async all(): Promise<{ name: string; fd: number; underTest: boolean }[]> {
    const files = [];
    for (const file of this.#files) {
      files.push({ name: file.name, fd: await this.fd(file.name), underTest: file.underTest });
    }
    return files;
  }

  /** Close every fd of the group this process holds. */
  async close(what: string): Promise<void> {
    for (const file of this.#files) {
      if (file.fd === undefined) continue;
      const fd = file.fd;
      await step(
        `closing ${file.underTest ? what : `${file.name} (a file of ${what}'s session)`}`,
        () => this.#process.close(fd),
      );
      file.fd = undefined;
    }
  }
}

/** One run of a law: its options, and the machines it booted (shut down afterwards). */
class LawRun {
  readonly options: ConformanceOptions;
  readonly harnesses: LiveUpdateHarness[] = [];
  ops: readonly HandlerOp[] = [];
  /** The groups of the files under test, by process, then fd. */
  readonly #groups = new WeakMap<Process, Map<number, FileGroup>>();
  /** The retrieved files under test of each incoming session, for `prepareFinish`. */
  readonly #retrieved = new Map<LiveUpdateSession, FileGroup[]>();

  constructor(options: ConformanceOptions) {
    this.options = options;
  }

  get compatible(): string {
    return this.options.handlerCompatible;
  }

  /** Boot a machine with the handler and open `/dev/liveupdate` in its process. */
  async boot(): Promise<{
    harness: LiveUpdateHarness;
    process: Process;
    device: LiveUpdateDevice;
  }> {
    const { harness, handler } = await bootHandlerMachine(this.options);
    this.harnesses.push(harness);
    this.ops = handler.ops;
    const device = await LiveUpdateDevice.open(harness.process);
    return { harness, process: harness.process, device };
  }

  /** Live-update `harness`; a new process of the new kernel with `/dev/liveupdate` open. */
  async liveUpdate(
    harness: LiveUpdateHarness,
    what = 'the live update',
  ): Promise<{ process: Process; device: LiveUpdateDevice }> {
    const process = await step(what, () => harness.liveUpdate());
    return {
      process,
      device: await step('opening /dev/liveupdate', () => LiveUpdateDevice.open(process)),
    };
  }

  /** Make a file under test (with the files of its session); its fd. */
  async createFile(process: Process, which = 'a file'): Promise<number> {
    const { createFile, createSession } = this.options;
    if (createFile) {
      const fd = await step(`createFile (${which})`, () => createFile(process));
      if (!Number.isSafeInteger(fd) || fd < 0) {
        fail(`createFile must resolve to the fd of a new file, got ${inspect(fd)}`);
      }
      return this.#remember(
        process,
        new FileGroup(process, fd, [{ name: 'file', fd, underTest: true }]),
      );
    }
    const made = await step(`createSession (${which})`, () => createSession!(process));
    const files = Array.isArray(made?.files) ? made.files : [];
    const names = new Set(files.map((f) => f?.name));
    if (
      files.length === 0 ||
      names.size !== files.length ||
      !files.every((f) => typeof f?.name === 'string' && Number.isSafeInteger(f.fd) && f.fd >= 0) ||
      !names.has(made.fileUnderTest)
    ) {
      fail(
        `createSession must resolve to { files: [{ name, fd }, …] } with distinct names and fileUnderTest one of them, got ${inspect(made, { depth: 3 })}`,
      );
    }
    const group = files.map(({ name, fd }) => ({
      name,
      fd,
      underTest: name === made.fileUnderTest,
    }));
    const fd = group.find((f) => f.underTest)!.fd;
    return this.#remember(process, new FileGroup(process, fd, group));
  }

  #remember(process: Process, group: FileGroup): number {
    this.#made ??= group;
    const groups = this.#groups.get(process) ?? new Map<number, FileGroup>();
    this.#groups.set(process, groups);
    groups.set(group.underTestFd, group);
    return group.underTestFd;
  }

  /** `fd` is another fd of the file under test `of`. */
  alias(process: Process, fd: number, of: number): void {
    this.#groups.get(process)!.set(fd, this.#group(process, of));
  }

  #group(process: Process, fd: number): FileGroup {
    const group = this.#groups.get(process)?.get(fd);
    if (!group) throw new Error(`conformance suite: fd ${fd} is not a file under test`);
    return group;
  }

  content(process: Process, fd: number, which: string): Promise<unknown> {
    return step(`readContent of ${which}`, () =>
      this.options.readContent(process, fd, this.#group(process, fd)),
    );
  }

  /** `mutate` the file when the options have it; returns the content afterwards. */
  async mutated(process: Process, fd: number, which: string): Promise<unknown> {
    const { mutate } = this.options;
    if (mutate)
      await step(`mutate of ${which}`, () => mutate(process, fd, this.#group(process, fd)));
    return this.content(process, fd, which);
  }

  /**
   * `PRESERVE_FD` of the file under test `fd` under `token`, with the files of its session
   * before and after it in their order, each under its own token.
   */
  async preserve(
    process: Process,
    session: LiveUpdateSession,
    fd: number,
    token: bigint,
    what = 'the file',
  ): Promise<void> {
    const group = this.#group(process, fd);
    const tokens = group.tokens(token);
    for (const file of await group.all()) {
      const fileToken = tokens.find((t) => t.name === file.name)!.token;
      await step(
        file.underTest
          ? `PRESERVE_FD of ${what}`
          : `PRESERVE_FD of ${file.name} (token ${fileToken}, a file ${what} depends on)`,
        () => session.preserveFd(file.fd, fileToken),
      );
    }
  }

  /** Close the file under test `fd` and the other files of its session this process holds. */
  async close(process: Process, fd: number, what = 'the file'): Promise<void> {
    await this.#group(process, fd).close(what);
  }

  /** Create a session and preserve one new file in it; returns the file's fd and content. */
  async preserveNewFile(
    process: Process,
    device: LiveUpdateDevice,
    name = SESSION,
    token = 1n,
  ): Promise<{ session: LiveUpdateSession; fd: number; content: unknown }> {
    const session = await step(`creating session "${name}"`, () => device.createSession(name));
    const fd = await this.createFile(process);
    await this.preserve(process, session, fd, token);
    return { session, fd, content: await this.mutated(process, fd, 'the preserved file') };
  }

  /**
   * `RETRIEVE_FD` of the file under test preserved under `token` in the incoming `session`,
   * with the files of its session reachable through {@link ConformanceFiles}. The group is that
   * of any file under test made in the previous kernel: all calls of `createSession` list the
   * same names.
   */
  async retrieveFd(
    process: Process,
    session: LiveUpdateSession,
    token: bigint,
    what = `RETRIEVE_FD of token ${token}`,
  ): Promise<number> {
    const fd = await step(what, () => session.retrieveFd(token));
    const group = this.#template.retrieved(process, session, token, fd);
    this.#remember(process, group);
    this.#retrieved.set(session, [...(this.#retrieved.get(session) ?? []), group]);
    return fd;
  }

  /** Retrieve session `name` and its file under `token`. */
  async retrieveFile(
    process: Process,
    device: LiveUpdateDevice,
    name = SESSION,
    token = 1n,
  ): Promise<{ session: LiveUpdateSession; fd: number }> {
    const session = await step(`RETRIEVE_SESSION "${name}"`, () => device.retrieveSession(name));
    return { session, fd: await this.retrieveFd(process, session, token) };
  }

  /** `FINISH` of an incoming session, after `prepareFinish` of each file under test retrieved. */
  async finish(process: Process, session: LiveUpdateSession, what = 'FINISH'): Promise<void> {
    const { prepareFinish } = this.options;
    for (const group of this.#retrieved.get(session) ?? []) {
      // The other files of its session: after FINISH they can no longer be retrieved.
      await group.all();
      if (prepareFinish) {
        await step(`prepareFinish before ${what}`, () =>
          prepareFinish(process, group.underTestFd, group),
        );
      }
    }
    await step(what, () => session.finish());
  }

  /** Any group made by `createFile`/`createSession`: they all have the same names. */
  get #template(): FileGroup {
    if (!this.#made) fail('the conformance suite retrieved a file it never made');
    return this.#made;
  }

  #made: FileGroup | undefined;
}

/** Run `work`; a failure becomes a violation saying which step failed and how. */
async function step<T>(what: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof ConformanceViolation || error instanceof LawSkipped) throw error;
    throw new ConformanceViolation(`${what} failed: ${describeError(error)}`, { cause: error });
  }
}

function fail(message: string): never {
  throw new ConformanceViolation(message);
}

/** `what` must fail with `errno`. */
async function expectErrno(
  what: string,
  work: Promise<unknown>,
  errno: ErrnoName,
  hint = '',
): Promise<void> {
  try {
    await work;
  } catch (error) {
    if (KernelError.isInstance(error) && error.code === errno) return;
    fail(`${what} failed with ${describeError(error)}; expected ${errno}${hint}`);
  }
  fail(`${what} succeeded; expected ${errno}${hint}`);
}

function expectSameContent(actual: unknown, expected: unknown, what: string, hint = ''): void {
  if (isDeepStrictEqual(actual, expected)) return;
  const show = (value: unknown): string =>
    inspect(value, { depth: 4, maxArrayLength: 24, maxStringLength: 120, breakLength: Infinity });
  fail(
    `${what}: the content differs\n  expected: ${show(expected)}\n  actual:   ${show(actual)}${hint}`,
  );
}

function expectNoDifference(
  before: TestkitStats,
  after: TestkitStats,
  stats: readonly TestkitStat[],
  what: string,
): void {
  const differences = statsDifferences(before, after, stats);
  if (differences.length > 0) fail(`${what}: ${differences.join(', ')}`);
}

/** `stats` that grew from `before` to `after` fail; shrinking is fine (see {@link HELD_NO_GROWTH}). */
function expectNoGrowth(
  before: TestkitStats,
  after: TestkitStats,
  stats: readonly TestkitStat[],
  what: string,
): void {
  const grown = statsDifferences(
    before,
    after,
    stats.filter((stat) => after[stat] > before[stat]),
  );
  if (grown.length > 0) fail(`${what}: ${grown.join(', ')}`);
}

/** Held counts after FINISH in the next kernel: open files as before, allocated frames no more. */
function expectFinishedHeld(before: TestkitStats, after: TestkitStats, what: string): void {
  expectNoDifference(before, after, ['openFiles'], what);
  expectNoGrowth(before, after, HELD_NO_GROWTH, what);
}

function expectAllRestored(stats: TestkitStats, what: string, hint: string): void {
  const folios = stats.khoUnrestoredFolios + stats.khoUnclaimedFolios;
  if (folios === 0) return;
  const frames = stats.khoUnrestoredFrames + stats.khoUnclaimedFrames;
  fail(
    `${what}, ${folios} folios (${frames} frames) the previous kernel preserved were never restored (${stats.khoUnclaimedFolios} of them freed by KHO as unclaimed): ${hint}`,
  );
}

const stats = (process: Process): Promise<TestkitStats> =>
  step('testkit_stats', () => testkitStats(process));

const LAWS = [
  {
    id: 'can-preserve',
    title: 'canPreserve is cheap and has no side effects',
    async check(run: LawRun): Promise<void> {
      const { process } = await run.boot();
      const fd = await run.createFile(process);
      const content = await run.content(process, fd, 'the file');
      const before = await stats(process);
      const probe = await step('canPreserve', () =>
        probeCanPreserve(process, run.compatible, fd, CAN_PRESERVE_CALLS),
      );
      if (!isDeepStrictEqual(probe.answers, [true])) {
        fail(
          `canPreserve answered ${probe.answers.map((a) => inspect(a)).join(' and ')} for a file createFile made (${CAN_PRESERVE_CALLS} calls); expected true every time, at once (a cheap check compares fops or a type tag and does not wait: no Promise)`,
        );
      }
      expectNoDifference(
        before,
        await stats(process),
        HELD,
        `${CAN_PRESERVE_CALLS} calls of canPreserve changed the kernel`,
      );
      expectSameContent(await run.content(process, fd, 'the file'), content, 'after canPreserve');
      const devNull = await step('open /dev/null', () => process.open('/dev/null', O_RDWR));
      const foreign = await step('canPreserve of /dev/null', () =>
        probeCanPreserve(process, run.compatible, devNull, 1),
      );
      if (!isDeepStrictEqual(foreign.answers, [false])) {
        fail(
          `canPreserve answered ${foreign.answers.map((a) => inspect(a)).join(' and ')} for /dev/null; it must take only files of its own kind`,
        );
      }
    },
  },
  {
    id: 'preserve-unpreserve',
    title: 'preserve then unpreserve leaves nothing behind',
    async check(run: LawRun): Promise<void> {
      const { process, device } = await run.boot();
      const start = await stats(process);
      const fd = await run.createFile(process);
      const created = await stats(process);
      for (const round of ['', ' again']) {
        const session = await step('CREATE_SESSION', () => device.createSession(SESSION));
        await run.preserve(process, session, fd, 1n, `the file${round}`);
        await step('closing the session (unpreserve)', () => session.close());
        expectNoDifference(
          created,
          await stats(process),
          PRESERVED,
          `after PRESERVE_FD${round} and closing the session (unpreserve), not everything preserve took was given back`,
        );
      }
      await run.close(process, fd);
      expectNoDifference(
        start,
        await stats(process),
        ['framesAllocated', ...PRESERVED],
        'after preserve, unpreserve and closing the file, the kernel is not as before the file was created',
      );
    },
  },
  {
    id: 'preserve-once',
    title: 'a file, or a dup of it, is preserved only once (EBUSY)',
    async check(run: LawRun): Promise<void> {
      const { process, device } = await run.boot();
      const { session, fd } = await run.preserveNewFile(process, device);
      const dup = await step('dup of the file', () => process.dup(fd));
      const hint =
        ': LUO tells files apart by getId (default: the file object), so it must give one file the same identity every time';
      await expectErrno(
        'PRESERVE_FD of the same file under a second token',
        session.preserveFd(fd, 2n),
        'EBUSY',
        hint,
      );
      await expectErrno(
        'PRESERVE_FD of a dup of the file',
        session.preserveFd(dup, 3n),
        'EBUSY',
        hint,
      );
      const other = await step('CREATE_SESSION', () => device.createSession(`${SESSION}-other`));
      await expectErrno(
        'PRESERVE_FD of the file in another session',
        other.preserveFd(dup, 1n),
        'EBUSY',
        hint,
      );
    },
  },
  {
    id: 'freeze-unfreeze',
    title: 'freeze then unfreeze round-trips',
    async check(run: LawRun): Promise<void> {
      const { harness, process, device } = await run.boot();
      if (!run.ops.includes('freeze')) throw new LawSkipped('the handler has no freeze');
      const session = await step('CREATE_SESSION', () => device.createSession(SESSION));
      const fds = [await run.createFile(process, 'first'), await run.createFile(process, 'second')];
      for (const [i, fd] of fds.entries()) {
        await run.preserve(process, session, fd, BigInt(i + 1), `file ${i + 1}`);
      }
      const contents = [
        await run.content(process, fds[0]!, 'file 1'),
        await run.content(process, fds[1]!, 'file 2'),
      ];
      const before = await stats(process);
      // The second freeze fails: the first file is frozen, then unfrozen by the rollback.
      await injectFault(process, {
        compatible: run.compatible,
        op: 'freeze',
        nth: 2,
        errno: 'EAGAIN',
      });
      await expectErrno(
        'the reboot, with the second freeze failed on purpose',
        harness.liveUpdate(),
        'EAGAIN',
      );
      const status = await faultStatus(process);
      if (run.ops.includes('unfreeze') && status.calls[run.compatible]?.unfreeze !== 1) {
        fail(
          `the rollback called unfreeze ${status.calls[run.compatible]?.unfreeze ?? 0} times; expected once`,
        );
      }
      await clearFault(process);
      expectNoDifference(
        before,
        await stats(process),
        ['framesAllocated', ...PRESERVED],
        'after freeze and unfreeze',
      );
      expectSameContent(
        await run.content(process, fds[0]!, 'file 1'),
        contents[0],
        'file 1 after freeze and unfreeze',
      );
      contents[0] = await run.mutated(process, fds[0]!, 'file 1 after unfreeze');
      const next = await run.liveUpdate(harness, 'the live update after the aborted one');
      const incoming = await step('RETRIEVE_SESSION', () => next.device.retrieveSession(SESSION));
      for (const [i, content] of contents.entries()) {
        const fd = await run.retrieveFd(
          next.process,
          incoming,
          BigInt(i + 1),
          `RETRIEVE_FD of file ${i + 1}`,
        );
        expectSameContent(
          await run.content(next.process, fd, `retrieved file ${i + 1}`),
          content,
          `file ${i + 1}, retrieved after a reboot aborted in freeze and a successful one`,
          POISON_HINT,
        );
      }
    },
  },
  {
    id: 'retrieve-content',
    title: 'retrieve after a live update gives back equal content',
    async check(run: LawRun): Promise<void> {
      const { harness, process, device } = await run.boot();
      const { fd, content } = await run.preserveNewFile(process, device);
      await run.close(process, fd, 'the file (LUO holds it)');
      const next = await run.liveUpdate(harness);
      const before = await stats(next.process);
      const { session, fd: retrieved } = await run.retrieveFile(next.process, next.device);
      expectSameContent(
        await run.content(next.process, retrieved, 'the retrieved file'),
        content,
        'the file retrieved in the next kernel',
        POISON_HINT,
      );
      await run.finish(next.process, session);
      await step('closing the session', () => session.close());
      await run.close(next.process, retrieved, 'the retrieved file');
      expectFinishedHeld(
        before,
        await stats(next.process),
        'after FINISH and closing the retrieved file',
      );
    },
  },
  {
    id: 'retrieve-twice',
    title: 'retrieving twice gives the same file',
    async check(run: LawRun): Promise<void> {
      const { harness, process, device } = await run.boot();
      const { fd, content } = await run.preserveNewFile(process, device);
      await run.close(process, fd);
      const next = await run.liveUpdate(harness);
      const { session, fd: first } = await run.retrieveFile(next.process, next.device);
      const second = await step('the second RETRIEVE_FD of the token', () =>
        session.retrieveFd(1n),
      );
      run.alias(next.process, second, first);
      if (!(await sameFile(next.process, first, second))) {
        fail(
          'two RETRIEVE_FDs of one token gave two different files; expected two fds of one file',
        );
      }
      const retrieves = (await faultStatus(next.process)).calls[run.compatible]?.retrieve ?? 0;
      if (retrieves !== 1)
        fail(`retrieve was called ${retrieves} times for one token; expected once`);
      expectSameContent(
        await run.content(next.process, second, 'the second fd'),
        content,
        'the file through the second fd',
        POISON_HINT,
      );
      if (run.options.mutate) {
        const changed = await run.mutated(next.process, first, 'the file through the first fd');
        expectSameContent(
          await run.content(next.process, second, 'the second fd'),
          changed,
          'a change through the first fd, read through the second',
        );
      }
      const outgoing = await step('CREATE_SESSION', () =>
        next.device.createSession(`${SESSION}-next`),
      );
      await expectErrno(
        'PRESERVE_FD of the retrieved file before FINISH',
        outgoing.preserveFd(second, 1n),
        'EBUSY',
        ': until FINISH the file still belongs to the incoming session; LUO finds it by getId, which must give the retrieved file the same identity every time',
      );
      await run.finish(next.process, session);
      await run.preserve(
        next.process,
        outgoing,
        second,
        1n,
        'the retrieved file after FINISH (an ordinary file now)',
      );
    },
  },
  {
    id: 'finish-unretrieved',
    title: 'finish of a never-retrieved file frees its preserved memory',
    async check(run: LawRun): Promise<void> {
      const { harness, process, device } = await run.boot();
      const { fd } = await run.preserveNewFile(process, device);
      await run.close(process, fd);
      const next = await run.liveUpdate(harness);
      const before = await stats(next.process);
      const session = await step('RETRIEVE_SESSION', () => next.device.retrieveSession(SESSION));
      await step('FINISH without RETRIEVE_FD', () => session.finish());
      await step('closing the session', () => session.close());
      const after = await stats(next.process);
      expectAllRestored(
        after,
        'after FINISH of a file never retrieved',
        'finish must restore and free everything preserve kept when args.file is null',
      );
      expectNoDifference(before, after, HELD, 'after FINISH of a file never retrieved');
    },
  },
  {
    id: 'void-ops',
    title: 'unpreserve, unfreeze and finish never throw',
    async check(run: LawRun): Promise<void> {
      // Every call is watched by the kernel-log check all laws share; this law makes the calls.
      const { harness, process, device } = await run.boot();
      const dropped = await run.preserveNewFile(process, device, `${SESSION}-dropped`);
      await step('closing a session (unpreserve)', () => dropped.session.close());
      const session = await step('CREATE_SESSION', () => device.createSession(SESSION));
      for (const token of [1n, 2n]) {
        const fd = await run.createFile(process);
        await run.preserve(process, session, fd, token, `the file of token ${token}`);
      }
      if (run.ops.includes('freeze')) {
        await injectFault(process, {
          compatible: run.compatible,
          op: 'freeze',
          nth: 2,
          errno: 'EAGAIN',
        });
        await expectErrno(
          'the reboot with the second freeze failed on purpose',
          harness.liveUpdate(),
          'EAGAIN',
        );
        await clearFault(process);
      }
      const next = await run.liveUpdate(harness);
      const { session: incoming } = await run.retrieveFile(next.process, next.device);
      await run.finish(next.process, incoming, 'FINISH (token 1 retrieved, token 2 not)');
    },
  },
  {
    id: 'three-updates',
    title: 'the handler survives three live updates in a row',
    async check(run: LawRun): Promise<void> {
      const { harness, process, device } = await run.boot();
      let { fd, content } = await run.preserveNewFile(process, device);
      await run.close(process, fd);
      for (const round of [1, 2, 3]) {
        const next = await run.liveUpdate(harness, `live update ${round}`);
        const before = await stats(next.process);
        const { session, fd: retrieved } = await run.retrieveFile(next.process, next.device);
        expectSameContent(
          await run.content(next.process, retrieved, 'the retrieved file'),
          content,
          `the file after live update ${round}`,
          POISON_HINT,
        );
        await run.finish(next.process, session);
        await step('closing the session', () => session.close());
        if (round === 3) {
          await run.close(next.process, retrieved, 'the retrieved file');
          const after = await stats(next.process);
          expectFinishedHeld(
            before,
            after,
            'after the third live update, FINISH and closing the file',
          );
          expectAllRestored(
            after,
            'after the third live update and FINISH',
            'retrieve and finish must take over everything that was preserved',
          );
          return;
        }
        const outgoing = await step('CREATE_SESSION', () => next.device.createSession(SESSION));
        await run.preserve(
          next.process,
          outgoing,
          retrieved,
          1n,
          `the file retrieved in live update ${round}`,
        );
        content = await run.mutated(next.process, retrieved, 'the preserved file');
        fd = retrieved;
        await run.close(next.process, fd);
      }
    },
  },
  {
    id: 'no-outside-state',
    title: 'the handler keeps no state outside preserved memory',
    async check(run: LawRun): Promise<void> {
      const { harness, process, device } = await run.boot();
      const a = await run.preserveNewFile(process, device, `${SESSION}-a`, 1n);
      const b = await run.preserveNewFile(process, device, `${SESSION}-b`, 2n);
      // Some churn the handler may track in memory of this kernel only.
      const dropped = await run.preserveNewFile(process, device, `${SESSION}-dropped`, 3n);
      await step('closing a session (unpreserve)', () => dropped.session.close());
      for (const fd of [a.fd, b.fd, dropped.fd]) await run.close(process, fd, 'a file');
      const next = await run.liveUpdate(harness);
      // The new kernel imported the handler's module afresh: its module variables and closures
      // start empty. Retrieve in the other order, finishing one session before the next.
      const hint =
        '\n  (the next kernel imports the handler afresh in a new worker: it must find everything it needs in KHO-preserved memory reachable from serializedData, not in module variables, globalThis, other threads or memory it does not own)';
      for (const [name, token, content] of [
        [`${SESSION}-b`, 2n, b.content],
        [`${SESSION}-a`, 1n, a.content],
      ] as const) {
        let retrieved;
        try {
          retrieved = await run.retrieveFile(next.process, next.device, name, token);
        } catch (error) {
          if (error instanceof ConformanceViolation) fail(`${error.message}${hint}`);
          throw error;
        }
        expectSameContent(
          await run.content(next.process, retrieved.fd, `the file of "${name}"`),
          content,
          `the file of "${name}" in the next kernel`,
          hint,
        );
        await run.finish(next.process, retrieved.session);
      }
    },
  },
  {
    id: 'reachable',
    title: 'its preserved structures are all reachable from its serializedData',
    async check(run: LawRun): Promise<void> {
      const { harness, process, device } = await run.boot();
      const { fd, content } = await run.preserveNewFile(process, device);
      await run.close(process, fd);
      const next = await run.liveUpdate(harness);
      const { session, fd: retrieved } = await run.retrieveFile(next.process, next.device);
      expectSameContent(
        await run.content(next.process, retrieved, 'the retrieved file'),
        content,
        'the file retrieved in the next kernel',
        `${POISON_HINT}\n  (a page the handler reaches from serializedData but did not preserve shows up here)`,
      );
      await run.finish(next.process, session);
      await run.close(next.process, retrieved, 'the retrieved file');
      expectAllRestored(
        await stats(next.process),
        'after RETRIEVE_FD and FINISH',
        'everything preserve hands over must be reachable from serializedData, so that retrieve can restore it (a folio nobody restores stays reserved for the life of the kernel)',
      );
    },
  },
] as const satisfies readonly ({ readonly id: ConformanceLawId } & Record<string, unknown>)[];

/** The laws, in the order `describeConformance` registers them. */
export const CONFORMANCE_LAWS: readonly ConformanceLaw[] = LAWS.map(({ id, title }) => ({
  id,
  title,
}));

/**
 * Check one law against a handler, on machines of its own (shut down afterwards): the law's
 * verdict, never a throw for a violation. Besides the law itself, every law fails when the kernel
 * log shows the handler threw something other than a `KernelError`, or threw from `unpreserve`,
 * `unfreeze` or `finish` (LUO logs those and carries on).
 *
 * A law named in `options.exceptions` is reported `skipped` with the declared reason when it
 * fails, and `failed` when it holds (the exception is stale).
 *
 * `describeConformance` runs every law this way; call it directly to check a single law, e.g. to
 * show that a deliberately broken handler fails it.
 */
export async function checkConformanceLaw(
  law: ConformanceLawId,
  options: ConformanceOptions,
): Promise<ConformanceVerdict> {
  checkConformanceOptions('checkConformanceLaw', options);
  const definition = LAWS.find((l) => l.id === law);
  if (!definition) {
    throw new TypeError(
      `checkConformanceLaw: unknown law ${inspect(law)}; the laws are ${LAWS.map((l) => l.id).join(', ')}`,
    );
  }
  const verdict = await runLaw(definition, options);
  const reason = options.exceptions?.[law];
  if (reason === undefined || verdict.status === 'skipped') return verdict;
  if (verdict.status === 'failed') {
    return {
      law,
      title: verdict.title,
      status: 'skipped',
      message: `declared exception: ${reason}\n  (the law fails: ${verdict.message ?? 'failed'})`,
      ...(verdict.cause === undefined ? {} : { cause: verdict.cause }),
    };
  }
  return {
    law,
    title: verdict.title,
    status: 'failed',
    message: `the law is declared an exception (${reason}), but it holds: remove it from exceptions`,
  };
}

/** Run one law on machines of its own: its verdict, exceptions not applied. */
async function runLaw(
  definition: (typeof LAWS)[number],
  options: ConformanceOptions,
): Promise<ConformanceVerdict> {
  const { id, title } = definition;
  const run = new LawRun(options);
  let timer: NodeJS.Timeout | undefined;
  try {
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new ConformanceViolation(
              `the law did not finish within ${LAW_DEADLINE_MS / 1000} s: a handler op or a callback never settled`,
            ),
          ),
        LAW_DEADLINE_MS,
      );
    });
    let failure: ConformanceViolation | undefined;
    try {
      await Promise.race([definition.check(run), deadline]);
    } catch (error) {
      if (error instanceof LawSkipped)
        return { law: id, title, status: 'skipped', message: error.message };
      if (!(error instanceof ConformanceViolation)) {
        throw error;
      }
      failure = error;
    }
    const throws = run.harnesses.flatMap((harness) => handlerThrows(harness, run.compatible));
    const messages = [...(failure ? [failure.message] : []), ...throws];
    if (messages.length === 0) return { law: id, title, status: 'passed' };
    return {
      law: id,
      title,
      status: 'failed',
      message: messages.join('\n'),
      ...(failure?.cause === undefined ? {} : { cause: failure.cause }),
    };
  } catch (error) {
    return {
      law: id,
      title,
      status: 'failed',
      message: `unexpected error: ${describeError(error)}`,
      cause: error,
    };
  } finally {
    clearTimeout(timer);
    await Promise.all(run.harnesses.map((harness) => harness.shutdown()));
  }
}

const VOID_OPS = new Set(['unpreserve', 'unfreeze', 'finish']);

/** What LUO logged of the handler's throws, on every kernel the machine ran, as violations. */
function handlerThrows(harness: LiveUpdateHarness, compatible: string): string[] {
  const prefix = `LUO: ${compatible}: `;
  const found: string[] = [];
  for (const event of harness.machine.timeline) {
    if (event.kind !== 'log' || !event.text.startsWith(prefix)) continue;
    const match = /^(\w+) threw (.*)/.exec(event.text.slice(prefix.length).split('\n')[0]!);
    if (!match) continue;
    const [, op, thrown] = match;
    found.push(
      VOID_OPS.has(op!)
        ? `${op} threw in kernel ${event.version} (LUO logged it and carried on; it must not fail): ${thrown}`
        : `${op} threw ${thrown} in kernel ${event.version}; signal a failure with a KernelError and an errno (LUO turned this into EIO)`,
    );
  }
  return found;
}
