import { inspect, isDeepStrictEqual } from 'node:util';
import { LiveUpdateDevice, type LiveUpdateSession } from '@liveupdate/core';
import { FILE_STATUS_FLAGS } from '@liveupdate/kernel';
import {
  F_GETFL,
  KernelError,
  O_ACCMODE,
  O_APPEND,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  isErrnoName,
  type ErrnoName,
  type Process,
} from '@liveupdate/machine';
import { callerSite, formatCallSite, type CallSite } from './call-site.js';
import { describeError } from './describe-error.js';
import { faultStatus } from './fault-injection.js';
import {
  HANDLER_MACHINE_KEYS,
  bootHandlerMachine,
  checkOptions,
  type HandlerMachineOptions,
} from './handler-machine.js';
import type { LiveUpdateHarness } from './live-update-harness.js';
import { statsDifferences, testkitStats, type TestkitStat } from './testkit-stats.js';

/** What a case's `setup` and `op` get: a fresh machine, with `/dev/liveupdate` open. */
export interface HandlerCaseContext {
  readonly harness: LiveUpdateHarness;
  readonly process: Process;
  readonly device: LiveUpdateDevice;
  /** An empty outgoing session, `"case"`, for the case's own preservations. */
  readonly session: LiveUpdateSession;
}

/**
 * A file the handler must preserve: `PRESERVE_FD` succeeds through this handler, the file
 * crosses a live update, is retrieved with the same open flags — access mode, `O_APPEND` and
 * `O_NONBLOCK`, as `fcntl(F_GETFL)` gives them (a read-only file must not come back read-write)
 * — and the same content, when the tester has `readContent`, and finishes leaving nothing
 * preserved behind.
 */
export interface PreservableCase {
  readonly name: string;
  /** Make the file; return its fd. */
  setup(context: HandlerCaseContext): Promise<number>;
}

/**
 * A file `PRESERVE_FD` must refuse, with `errno` when given, leaving the kernel's counts (frames,
 * KHO preservations, open files) as they were.
 */
export interface RefusedCase {
  readonly name: string;
  /** Make the file; return its fd. */
  setup(context: HandlerCaseContext): Promise<number>;
  /** The errno name the refusal must carry, e.g. `'EOPNOTSUPP'`; any errno when absent. */
  readonly errno?: ErrnoName;
}

/**
 * An operation that must fail with `errno` and change nothing: `setup` prepares (and may preserve
 * files, or even live-update through `context.harness`), `op` is the one call that must fail. `op`
 * gets the same context and what `setup` returned: after a live update in `setup`, return the new
 * kernel's process and session for `op` to use.
 */
export interface FailingCase<S = unknown> {
  readonly name: string;
  setup(context: HandlerCaseContext): Promise<S>;
  op(context: HandlerCaseContext, state: S): Promise<unknown>;
  /** The errno name `op` must fail with, e.g. `'EPERM'`. Required. */
  readonly errno: ErrnoName;
}

/** Options of {@link runHandlerCases}. */
export interface HandlerCasesOptions extends HandlerMachineOptions {
  /** The title of the `describe` block. */
  readonly name: string;
  /** When given, preservable files must come back with equal content (`util.isDeepStrictEqual`). */
  readonly readContent?: (process: Process, fd: number) => Promise<unknown>;
  readonly preservable?: readonly PreservableCase[];
  readonly refused?: readonly RefusedCase[];
  readonly failing?: readonly FailingCase<unknown>[];
}

/** Which table a case is in. */
export type HandlerCaseKind = 'preservable' | 'refused' | 'failing';

/** One validated case, with where the author wrote it. */
export interface HandlerCaseEntry {
  readonly kind: HandlerCaseKind;
  readonly name: string;
  /** `file:line:column` of the case, or of the `runHandlerCases` call and its index. */
  readonly location: string;
  readonly site: CallSite | undefined;
  readonly case: PreservableCase | RefusedCase | FailingCase<unknown>;
}

/** The outcome of one case. */
export interface HandlerCaseVerdict {
  readonly name: string;
  readonly passed: boolean;
  /** Why it failed: starts with the case's name and location. */
  readonly message?: string;
  readonly cause?: unknown;
}

const CASE_KEYS: Readonly<Record<HandlerCaseKind, readonly string[]>> = {
  preservable: ['name', 'setup'],
  refused: ['name', 'setup', 'errno'],
  failing: ['name', 'setup', 'op', 'errno'],
};
const KINDS = Object.keys(CASE_KEYS) as HandlerCaseKind[];
const OPTION_KEYS = [...HANDLER_MACHINE_KEYS, 'name', 'readContent', ...KINDS];
const sites = new WeakMap<object, CallSite>();
/** Counts that must not change while a refused or failing case's one call runs. */
const UNCHANGED: readonly TestkitStat[] = [
  'framesAllocated',
  'khoPreservedFolios',
  'khoPreservedFrames',
  'openFiles',
];

/**
 * Mark a case object with where it is written, so that its failures point at this line. Returns
 * the case itself, frozen. Optional: a plain object works too, and is located by its index in the
 * `runHandlerCases` call.
 *
 * @example
 * ```ts
 * refused: [handlerCase({ name: 'a hugetlb memfd', setup: ..., errno: 'ENOENT' })],
 * ```
 */
export function handlerCase<C extends PreservableCase | RefusedCase | FailingCase<unknown>>(
  testCase: C,
): C {
  const site = callerSite();
  if (site && typeof testCase === 'object' && testCase !== null) sites.set(testCase, site);
  return Object.isFrozen(testCase) ? testCase : Object.freeze(testCase);
}

/**
 * Validate the options and every case, as ESLint's RuleTester does before running anything:
 * unknown keys, missing or duplicate names, a `setup` or `op` that is not a function, a failing
 * case without an `errno`, an errno name that does not exist. Throws a `TypeError` naming the
 * case and where it is written. Cases are frozen, so a test cannot change them.
 */
export function checkHandlerCases(
  caller: string,
  options: HandlerCasesOptions,
  callSite: CallSite | undefined = callerSite(),
): HandlerCaseEntry[] {
  checkOptions(caller, options, OPTION_KEYS, { required: [], optional: ['readContent'] });
  if (typeof options.name !== 'string' || options.name === '') {
    throw new TypeError(
      `${caller}: name must be the title of the cases, got ${inspect(options.name)}`,
    );
  }
  const entries: HandlerCaseEntry[] = [];
  const byName = new Map<string, HandlerCaseEntry>();
  for (const kind of KINDS) {
    const cases: unknown = options[kind];
    if (cases === undefined) continue;
    if (!Array.isArray(cases)) {
      throw new TypeError(`${caller}: ${kind} must be an array of cases, got ${inspect(cases)}`);
    }
    cases.forEach((value: unknown, index) => {
      const where = `${kind}[${index}]`;
      const site =
        typeof value === 'object' && value !== null ? (sites.get(value) ?? callSite) : callSite;
      const location = `${site ? formatCallSite(site) : '<unknown>'}${site === callSite ? ` (${where})` : ''}`;
      const invalid = (problem: string): never => {
        const label =
          typeof value === 'object' &&
          value !== null &&
          typeof (value as { name?: unknown }).name === 'string'
            ? `${kind} case "${(value as { name: string }).name}"`
            : `${where}`;
        throw new TypeError(`${caller}: ${label} at ${location}: ${problem}`);
      };
      if (typeof value !== 'object' || value === null)
        invalid(`expected a case object, got ${inspect(value)}`);
      const record = value as Record<string, unknown>;
      const unknown = Object.keys(record).filter((key) => !CASE_KEYS[kind].includes(key));
      if (unknown.length > 0) {
        invalid(
          `unknown key ${unknown.map((k) => JSON.stringify(k)).join(', ')}; a ${kind} case has ${CASE_KEYS[kind].join(', ')}`,
        );
      }
      if (typeof record.name !== 'string' || record.name.trim() === '') {
        invalid(`name must be a non-empty string, got ${inspect(record.name)}`);
      }
      const name = record.name as string;
      const earlier = byName.get(name);
      if (earlier) {
        invalid(
          `the name is also used by the ${earlier.kind} case at ${earlier.location}; each case becomes a test and needs its own name`,
        );
      }
      if (typeof record.setup !== 'function')
        invalid(`setup must be a function, got ${inspect(record.setup)}`);
      if (kind === 'failing' && typeof record.op !== 'function') {
        invalid(`op must be the function that has to fail, got ${inspect(record.op)}`);
      }
      if (kind === 'failing' && record.errno === undefined) {
        invalid(
          `a failing case needs an errno: say which errno the operation must fail with, e.g. errno: 'EPERM'`,
        );
      }
      if (record.errno !== undefined && !isErrnoName(record.errno)) {
        invalid(`errno must be an errno name such as 'EINVAL', got ${inspect(record.errno)}`);
      }
      const entry: HandlerCaseEntry = {
        kind,
        name,
        location,
        site,
        case: Object.isFrozen(value)
          ? (value as HandlerCaseEntry['case'])
          : Object.freeze(value as HandlerCaseEntry['case']),
      };
      byName.set(name, entry);
      entries.push(entry);
    });
  }
  if (entries.length === 0) {
    throw new TypeError(`${caller}: no cases; give preservable, refused or failing cases`);
  }
  return entries;
}

/** A case fails: the message says what was expected and what happened. */
class CaseFailure extends Error {
  override readonly name = 'CaseFailure';
}

async function step<T>(what: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof CaseFailure) throw error;
    throw new CaseFailure(`${what} failed: ${describeError(error)}`, { cause: error });
  }
}

/** `work` must reject with `errno` (any errno when `undefined`). */
async function expectFailure(
  what: string,
  work: () => Promise<unknown>,
  errno: ErrnoName | undefined,
): Promise<void> {
  const expected = errno ?? 'an error';
  try {
    await work();
  } catch (error) {
    if (KernelError.isInstance(error) && (errno === undefined || error.code === errno)) return;
    throw new CaseFailure(`${what} failed with ${describeError(error)}; expected ${expected}`, {
      cause: error,
    });
  }
  throw new CaseFailure(`${what} succeeded; expected ${expected}`);
}

/**
 * Run one validated case on a machine of its own (shut down afterwards) and return its verdict.
 * {@link runHandlerCases} runs each case this way.
 */
export async function checkHandlerCase(
  options: HandlerCasesOptions,
  entry: HandlerCaseEntry,
): Promise<HandlerCaseVerdict> {
  let harness: LiveUpdateHarness | undefined;
  try {
    harness = (await bootHandlerMachine(options)).harness;
    const process = harness.process;
    const device = await LiveUpdateDevice.open(process);
    const context: HandlerCaseContext = {
      harness,
      process,
      device,
      session: await device.createSession('case'),
    };
    switch (entry.kind) {
      case 'preservable':
        await checkPreservable(options, context, entry.case as PreservableCase);
        break;
      case 'refused':
        await checkRefused(context, entry.case as RefusedCase);
        break;
      case 'failing':
        await checkFailing(context, entry.case as FailingCase<unknown>);
        break;
    }
    return { name: entry.name, passed: true };
  } catch (error) {
    const failure = error instanceof CaseFailure;
    const cause = failure ? error.cause : error;
    return {
      name: entry.name,
      passed: false,
      message: `${entry.kind} case "${entry.name}" at ${entry.location}: ${
        failure ? error.message : `unexpected error: ${describeError(error)}`
      }`,
      ...(cause === undefined ? {} : { cause }),
    };
  } finally {
    await harness?.shutdown();
  }
}

async function checkPreservable(
  options: HandlerCasesOptions,
  context: HandlerCaseContext,
  testCase: PreservableCase,
): Promise<void> {
  const { process, session, harness } = context;
  const compatible = options.handlerCompatible;
  const fd = await step('setup', () => testCase.setup(context));
  const preserves = async (): Promise<number> =>
    (await faultStatus(process)).calls[compatible]?.preserve ?? 0;
  const before = await preserves();
  await step('PRESERVE_FD', () => session.preserveFd(fd, 1n));
  if ((await preserves()) !== before + 1) {
    const calls = (await faultStatus(process)).calls;
    const taker = Object.keys(calls).find((c) => c !== compatible && calls[c]?.preserve);
    throw new CaseFailure(
      `PRESERVE_FD succeeded, but not through ${compatible}${taker ? ` (${taker} took it)` : ''}`,
    );
  }
  const flags = await step('fcntl(F_GETFL)', () => openFlags(process, fd));
  const content = options.readContent
    ? await step('readContent', () => options.readContent!(process, fd))
    : undefined;
  await step('closing the file', () => process.close(fd));
  const next = await step('the live update', () => harness.liveUpdate());
  const device = await step('opening /dev/liveupdate', () => LiveUpdateDevice.open(next));
  const incoming = await step('RETRIEVE_SESSION', () => device.retrieveSession('case'));
  const retrieved = await step('RETRIEVE_FD', () => incoming.retrieveFd(1n));
  const flagsAfter = await step('fcntl(F_GETFL) of the retrieved file', () =>
    openFlags(next, retrieved),
  );
  if (flagsAfter !== flags) {
    throw new CaseFailure(
      `the retrieved file's open flags differ\n  expected: ${openFlagsName(flags)}\n  actual:   ${openFlagsName(flagsAfter)}`,
    );
  }
  if (options.readContent) {
    const after = await step('readContent of the retrieved file', () =>
      options.readContent!(next, retrieved),
    );
    if (!isDeepStrictEqual(after, content)) {
      throw new CaseFailure(
        `the retrieved file's content differs\n  expected: ${inspect(content)}\n  actual:   ${inspect(after)}`,
      );
    }
  }
  await step('FINISH', () => incoming.finish());
  await step('closing the retrieved file', () => next.close(retrieved));
  const stats = await testkitStats(next);
  const folios = stats.khoUnrestoredFolios + stats.khoUnclaimedFolios;
  if (folios > 0) {
    throw new CaseFailure(
      `after RETRIEVE_FD and FINISH, ${folios} preserved folios (${stats.khoUnrestoredFrames + stats.khoUnclaimedFrames} frames) were never restored`,
    );
  }
}

/** The flags of `fd`'s file that a handler must carry across: `F_GETFL`'s, less the fd's own. */
async function openFlags(process: Process, fd: number): Promise<number> {
  return (await process.fcntl(fd, F_GETFL)) & FILE_STATUS_FLAGS;
}

const ACCESS_MODES: Readonly<Record<number, string>> = {
  [O_RDONLY]: 'O_RDONLY',
  [O_WRONLY]: 'O_WRONLY',
  [O_RDWR]: 'O_RDWR',
  [O_ACCMODE]: 'O_ACCMODE',
};

/** `flags` as a C programmer writes them: `O_RDONLY | O_NONBLOCK`. */
function openFlagsName(flags: number): string {
  const names = [ACCESS_MODES[flags & O_ACCMODE]!];
  if (flags & O_APPEND) names.push('O_APPEND');
  if (flags & O_NONBLOCK) names.push('O_NONBLOCK');
  return names.join(' | ');
}

async function checkRefused(context: HandlerCaseContext, testCase: RefusedCase): Promise<void> {
  const fd = await step('setup', () => testCase.setup(context));
  const before = await testkitStats(context.process);
  await expectFailure('PRESERVE_FD', () => context.session.preserveFd(fd, 1n), testCase.errno);
  const differences = statsDifferences(before, await testkitStats(context.process), UNCHANGED);
  if (differences.length > 0) {
    throw new CaseFailure(
      `the refused PRESERVE_FD left something behind: ${differences.join(', ')}`,
    );
  }
}

async function checkFailing(
  context: HandlerCaseContext,
  testCase: FailingCase<unknown>,
): Promise<void> {
  const state = await step('setup', () => testCase.setup(context));
  const process = context.harness.process;
  const before = await testkitStats(process);
  await expectFailure('op', () => testCase.op(context, state), testCase.errno);
  const differences = statsDifferences(before, await testkitStats(process), UNCHANGED);
  if (differences.length > 0) {
    throw new CaseFailure(`the failed op changed the kernel: ${differences.join(', ')}`);
  }
}
