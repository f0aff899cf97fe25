import { inspect, isDeepStrictEqual } from 'node:util';
import { LiveUpdateDevice } from '@liveupdate/core';
import {
  KernelError,
  LINUX_REBOOT_CMD_KEXEC,
  type HandoverEvent,
  type Process,
} from '@liveupdate/machine';
import { describeError } from './describe-error.js';
import { faultStatus } from './fault-injection.js';
import { HANDLER_MACHINE_RAM_BYTES, checkMachineOptions } from './handler-machine.js';
import {
  DEFAULT_HARNESS_VERSION,
  bootForLiveUpdate,
  type LiveUpdateHarness,
} from './live-update-harness.js';
import { liveUpdateImage } from './live-update-image.js';
import { rawLuoHandover } from './luo-handover-bytes.js';
import { statsDifferences, testkitStats, type TestkitStat } from './testkit-stats.js';

/**
 * One version of a handler in a version matrix: the kernel image that carries that build of the
 * handler, and the formats the author says it writes and reads. The matrix takes these lists as
 * the declaration to check the build against; it does not read them from the handler.
 */
export interface HandlerVersion {
  /**
   * The version's name in results and test names, e.g. `"1.0"`: letters, digits and `._+-`, unique
   * in the matrix. Its kernel runs as version `6.18.0-<name>`.
   */
  readonly name: string;
  /** Modules of this version's kernel, loaded after LUO: this build of the handler, and its needs. */
  readonly modules: readonly string[];
  /** The formats this build writes, newest first: its handler's `writes`. */
  readonly writes: readonly string[];
  /** The formats this build reads: its handler's `reads`. Includes `writes[0]`. */
  readonly reads: readonly string[];
}

/** What a version matrix needs: the versions, and how to make and read a file. */
export interface VersionMatrixOptions {
  /** The title of the `describe` block, and of the table. */
  readonly name: string;
  /** The versions; every ordered pair of them (a version with itself too) is one live update. */
  readonly versions: readonly HandlerVersion[];
  /** Where relative and bare module specifiers resolve from; usually `import.meta.url`. */
  readonly moduleBase?: string;
  /** Extra command-line words for every kernel, e.g. your module's parameters. */
  readonly cmdline?: string;
  /** Default `HANDLER_MACHINE_RAM_BYTES`. */
  readonly ramBytes?: number;
  /** Make a file the writer's handler preserves, in `process`, and return its fd. */
  createFile(process: Process, version: HandlerVersion): Promise<number>;
  /**
   * The file's content as a value to compare (`util.isDeepStrictEqual`): what the writer reads
   * before the reboot must be what the reader reads after it, and, for a refused pair, what the
   * writer still reads after the refusal.
   */
  readContent(process: Process, fd: number, version: HandlerVersion): Promise<unknown>;
  /**
   * Change the file after `PRESERVE_FD`, before the reboot, so the pair checks that what crosses
   * is the content at the reboot (written by `freeze` in the format the reader takes). A refused
   * pair calls it again after the refusal: the file must still be usable.
   */
  mutate?(process: Process, fd: number, version: HandlerVersion): Promise<void>;
}

/** What the declaration says of a pair: the writer's writes and the reader's reads meet, or not. */
export type VersionPairExpectation = 'updates' | 'refused';

/**
 * What happened: the kexec went through (`updated`), `reboot` refused it with `ENOEXEC` and the
 * writer's kernel runs on (`refused`), or anything else (`failed`: another errno, a panic, a
 * callback or syscall that threw before the reboot, a deadline).
 */
export type VersionPairOutcome = 'updated' | 'refused' | 'failed';

/** The result of one writer → reader pair. */
export interface VersionPairVerdict {
  /** The writer's version name. */
  readonly writer: string;
  /** The reader's version name. */
  readonly reader: string;
  readonly expected: VersionPairExpectation;
  /** For a pair expected to update: the first of the writer's `writes` that the reader `reads`. */
  readonly expectedFormat?: string;
  readonly outcome: VersionPairOutcome;
  /** The file's `compatible` in the handover, as LUO wrote it; absent when no kexec happened. */
  readonly format?: string;
  /** Whether the pair behaved as declared, and every check of it passed. */
  readonly passed: boolean;
  /** Why not: the pair, the declared expectation, and what happened. */
  readonly message?: string;
  /** The error behind a failure, when there was one. */
  readonly cause?: unknown;
}

/** The result of {@link checkVersionMatrix}. */
export interface VersionMatrixReport {
  /** Every pair passed. */
  readonly passed: boolean;
  /** One verdict per ordered pair, writers in the order of `versions`, then readers. */
  readonly pairs: readonly VersionPairVerdict[];
  /** The pairs as a text table: writer, reader, expected, outcome, format, result. */
  readonly table: string;
}

/** One pair to run, with what its declaration expects. */
export interface VersionPair {
  readonly writer: HandlerVersion;
  readonly reader: HandlerVersion;
  readonly expected: VersionPairExpectation;
  readonly expectedFormat?: string;
}

/**
 * Per pair: two boots and one kexec take seconds; the bound is generous so that a loaded machine
 * never trips it, and a hung pair is still cut and named.
 */
export const PAIR_DEADLINE_MS = 90_000;
const SESSION = 'matrix';
const TOKEN = 1n;
const OPTION_KEYS = [
  'name',
  'versions',
  'moduleBase',
  'cmdline',
  'ramBytes',
  'createFile',
  'readContent',
  'mutate',
];
const VERSION_KEYS = ['name', 'modules', 'writes', 'reads'];
const VERSION_NAME = /^[A-Za-z0-9._+-]{1,48}$/;
/** What closing a refused pair's session must give back: its preservations and references. */
const PRESERVED: readonly TestkitStat[] = ['khoPreservedFolios', 'khoPreservedFrames', 'openFiles'];

/** The kernel version a handler version runs as. */
function kernelVersionOf(version: HandlerVersion): string {
  return `${DEFAULT_HARNESS_VERSION}-${version.name}`;
}

/** `1.0 → 2.0`. */
export function pairName(pair: VersionPair): string {
  return `${pair.writer.name} → ${pair.reader.name}`;
}

/**
 * Check the options and list every ordered pair with its expectation. Throws a `TypeError` that
 * names the option or version, what was expected and what was found.
 */
export function versionPairs(caller: string, options: VersionMatrixOptions): VersionPair[] {
  checkVersionMatrixOptions(caller, options);
  return options.versions.flatMap((writer) =>
    options.versions.map((reader) => {
      const expectedFormat = writer.writes.find((format) => reader.reads.includes(format));
      return expectedFormat === undefined
        ? { writer, reader, expected: 'refused' as const }
        : { writer, reader, expected: 'updates' as const, expectedFormat };
    }),
  );
}

function checkVersionMatrixOptions(
  caller: string,
  options: unknown,
): asserts options is VersionMatrixOptions {
  if (typeof options !== 'object' || options === null) {
    throw new TypeError(`${caller}: expected an options object, got ${inspect(options)}`);
  }
  const record = options as Record<string, unknown>;
  checkKeys(caller, 'option', record, OPTION_KEYS);
  if (typeof record.name !== 'string' || record.name === '') {
    throw new TypeError(
      `${caller}: name must be the title of the matrix, got ${inspect(record.name)}`,
    );
  }
  checkMachineOptions(caller, record);
  for (const key of ['createFile', 'readContent'] as const) {
    if (typeof record[key] !== 'function') {
      throw new TypeError(`${caller}: ${key} must be a function, got ${inspect(record[key])}`);
    }
  }
  if (record.mutate !== undefined && typeof record.mutate !== 'function') {
    throw new TypeError(
      `${caller}: mutate must be a function when given, got ${inspect(record.mutate)}`,
    );
  }
  const versions = record.versions;
  if (!Array.isArray(versions) || versions.length === 0) {
    throw new TypeError(
      `${caller}: versions must list the versions of the handler (e.g. [{ name: '1.0', modules, writes, reads }]), got ${inspect(versions)}`,
    );
  }
  const names = new Set<string>();
  versions.forEach((value: unknown, index) => {
    const bad = (problem: string): never => {
      throw new TypeError(`${caller}: versions[${index}]: ${problem}`);
    };
    if (typeof value !== 'object' || value === null)
      bad(`expected a version object, got ${inspect(value)}`);
    const version = value as Record<string, unknown>;
    checkKeys(`${caller}: versions[${index}]`, 'key', version, VERSION_KEYS);
    if (typeof version.name !== 'string' || !VERSION_NAME.test(version.name)) {
      bad(
        `name must be 1-48 letters, digits or ._+- (it becomes a kernel version), got ${inspect(version.name)}`,
      );
    }
    const name = version.name as string;
    if (names.has(name)) bad(`the name "${name}" is used twice; each version needs its own`);
    names.add(name);
    const strings = (key: string, what: string): string[] => {
      const list = version[key];
      if (
        !Array.isArray(list) ||
        list.length === 0 ||
        !list.every((item) => typeof item === 'string' && item !== '')
      ) {
        bad(`${key} must list ${what}, got ${inspect(list)}`);
      }
      return list as string[];
    };
    strings('modules', "the module specifiers of this version (e.g. ['@acme/my-handler@1'])");
    const writes = strings('writes', 'the formats this version writes, newest first');
    const reads = strings('reads', 'the formats this version reads');
    for (const [key, list] of [
      ['writes', writes],
      ['reads', reads],
    ] as const) {
      const twice = list.find((format, i) => list.indexOf(format) !== i);
      if (twice !== undefined) bad(`${key} lists "${twice}" twice`);
    }
    if (!reads.includes(writes[0]!)) {
      bad(`reads must include writes[0] ("${writes[0]}"): a handler reads the format it writes`);
    }
  });
}

function checkKeys(
  where: string,
  what: string,
  record: Record<string, unknown>,
  allowed: readonly string[],
): void {
  const unknown = Object.keys(record).filter((key) => !allowed.includes(key));
  if (unknown.length > 0) {
    throw new TypeError(
      `${where}: unknown ${what} ${unknown.map((k) => JSON.stringify(k)).join(', ')}; the ${what}s are ${allowed.join(', ')}`,
    );
  }
}

/** What the declaration says, for messages. */
function declaration(pair: VersionPair): string {
  const { writer, reader } = pair;
  return pair.expected === 'updates'
    ? `declared to update, written as ${pair.expectedFormat} (the first of ${writer.name}'s writes ${writer.writes.join(', ')} that ${reader.name} reads: ${reader.reads.join(', ')})`
    : `declared to be refused before the blackout (${writer.name} writes ${writer.writes.join(', ')}; ${reader.name} reads ${reader.reads.join(', ')})`;
}

/** The compatible of the matrix's file in the handover at `khoFdtPhys`, read as raw bytes. */
function handoverFormat(event: HandoverEvent): string {
  if (event.khoFdtPhys === null) throw new Error('the old kernel handed over no KHO root');
  const session = rawLuoHandover(event.memory, event.khoFdtPhys).sessions.find(
    (s) => new TextDecoder().decode(s.entry.name) === SESSION,
  );
  if (!session) throw new Error(`the handover holds no session "${SESSION}"`);
  const file = session.files.find((f) => f.entry.token === TOKEN);
  if (!file) throw new Error(`the handover's session "${SESSION}" holds no token ${TOKEN}`);
  return file.entry.compatible;
}

/**
 * Live-update one pair and judge it against its declaration. Never throws for a misbehaving
 * pair: the verdict says what happened.
 */
export async function runVersionPair(
  options: VersionMatrixOptions,
  pair: VersionPair,
): Promise<VersionPairVerdict> {
  const { writer, reader } = pair;
  const wrong: string[] = [];
  let outcome: VersionPairOutcome = 'failed';
  let format: string | undefined;
  let formatError: unknown;
  let step = `booting ${writer.name}`;
  let harness: LiveUpdateHarness | undefined;
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  // Fault injection on for `faultStatus`, whose counts of handler calls show what a refused pair
  // ran; no fault is ever set.
  const cmdline = `liveupdate.fault_injection=on${options.cmdline ? ` ${options.cmdline}` : ''}`;
  const moduleBase = options.moduleBase === undefined ? {} : { moduleBase: options.moduleBase };

  const live = async (): Promise<void> => {
    const booted = await bootForLiveUpdate({
      modules: writer.modules,
      version: kernelVersionOf(writer),
      ramBytes: options.ramBytes ?? HANDLER_MACHINE_RAM_BYTES,
      cmdline,
      ...moduleBase,
      onHandover(event) {
        try {
          format = handoverFormat(event);
        } catch (error) {
          formatError = error;
        }
      },
    });
    if (timedOut) {
      await booted.shutdown();
      return;
    }
    harness = booted;
    const { machine, process } = harness;
    const device = await LiveUpdateDevice.open(process);
    step = `createFile in ${writer.name}`;
    const fd = await options.createFile(process, writer);
    const before = await testkitStats(process);
    step = `PRESERVE_FD in ${writer.name}`;
    const session = await device.createSession(SESSION);
    await session.preserveFd(fd, TOKEN);
    if (options.mutate) {
      step = `mutate in ${writer.name}`;
      await options.mutate(process, fd, writer);
    }
    step = `readContent in ${writer.name}`;
    const content = await options.readContent(process, fd, writer);
    step = `kexec_load of ${reader.name}`;
    await process.kexecLoad(
      liveUpdateImage({
        version: kernelVersionOf(reader),
        modules: reader.modules,
        cmdline,
        ...moduleBase,
      }),
    );
    step = 'CHECK_KEXEC';
    const check = await device.checkKexec();
    if (check.version !== kernelVersionOf(reader)) {
      wrong.push(
        `CHECK_KEXEC names the loaded kernel ${check.version}, not ${kernelVersionOf(reader)}`,
      );
    }
    const named = `session "${SESSION}" token ${TOKEN}`;
    if (pair.expected === 'updates' && !check.ok) {
      wrong.push(
        `CHECK_KEXEC found ${check.problemCount} problem(s): ${check.problems.join('; ')}`,
      );
    }
    if (pair.expected === 'refused') {
      if (check.ok) wrong.push('CHECK_KEXEC said the loaded kernel reads everything');
      else if (!check.problems.some((problem) => problem.includes(named))) {
        wrong.push(`CHECK_KEXEC's problems do not name ${named}: ${check.problems.join('; ')}`);
      }
    }

    step = 'reboot';
    try {
      await process.reboot(LINUX_REBOOT_CMD_KEXEC);
    } catch (error) {
      if (!KernelError.isInstance(error) || error.code !== 'ENOEXEC') throw error;
      outcome = 'refused';
      if (pair.expected === 'updates') {
        wrong.push(`reboot refused the kexec: ${describeError(error)}`);
        return;
      }
      // Refused as declared: before anything irreversible, and the file is as it was.
      if (machine.kernelVersion !== kernelVersionOf(writer) || machine.bootCount !== 1) {
        wrong.push(
          `the machine runs ${machine.kernelVersion} (boot ${machine.bootCount}) after the refusal, not ${kernelVersionOf(writer)}`,
        );
      }
      if (!machine.dmesg().includes(`cannot read liveupdate: ${named}`)) {
        wrong.push(
          `the kernel log does not say what ${kernelVersionOf(reader)} cannot read of ${named}`,
        );
      }
      const calls = (await faultStatus(process)).calls;
      const ran = Object.entries(calls).flatMap(([compatible, ops]) =>
        (['freeze', 'unfreeze'] as const)
          .filter((op) => (ops[op] ?? 0) > 0)
          .map((op) => `${compatible} ${op} ×${ops[op]}`),
      );
      if (ran.length > 0) wrong.push(`handler ops ran before the refusal: ${ran.join(', ')}`);
      step = `readContent in ${writer.name} after the refusal`;
      const after = await options.readContent(process, fd, writer);
      if (!isDeepStrictEqual(after, content)) {
        wrong.push(`after the refusal the file reads ${inspect(after)}, not ${inspect(content)}`);
      }
      if (options.mutate) {
        step = `mutate in ${writer.name} after the refusal`;
        await options.mutate(process, fd, writer);
      }
      step = `closing session "${SESSION}" after the refusal`;
      await session.close();
      const leftover = statsDifferences(before, await testkitStats(process), PRESERVED);
      if (leftover.length > 0) {
        wrong.push(`closing the session after the refusal left ${leftover.join(', ')}`);
      }
      return;
    }

    outcome = 'updated';
    if (pair.expected === 'refused') {
      wrong.push(`the kexec went through${format === undefined ? '' : `, written as ${format}`}`);
    }
    if (machine.kernelVersion !== kernelVersionOf(reader)) {
      wrong.push(`the machine runs ${machine.kernelVersion}, not ${kernelVersionOf(reader)}`);
    }
    if (format === undefined) {
      wrong.push(`the handover could not be read: ${describeError(formatError)}`);
    } else if (pair.expected === 'updates' && format !== pair.expectedFormat) {
      wrong.push(`the handover holds the file as ${format}`);
    }
    step = `retrieving ${named} in ${reader.name}`;
    const next = machine.spawn();
    const incoming = await (await LiveUpdateDevice.open(next)).retrieveSession(SESSION);
    const retrieved = await incoming.retrieveFd(TOKEN);
    step = `readContent in ${reader.name}`;
    const arrived = await options.readContent(next, retrieved, reader);
    if (!isDeepStrictEqual(arrived, content)) {
      wrong.push(
        `${reader.name} reads ${inspect(arrived)}, ${writer.name} had ${inspect(content)}`,
      );
    }
    step = `FINISH in ${reader.name}`;
    await incoming.finish();
  };

  let cause: unknown;
  try {
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        reject(
          new Error(
            `timed out waiting for ${step} (${PAIR_DEADLINE_MS / 1000} s): a handler op or a callback never settled`,
          ),
        );
      }, PAIR_DEADLINE_MS);
    });
    await Promise.race([live(), deadline]);
  } catch (error) {
    cause = error;
    wrong.push(timedOut ? (error as Error).message : `${step} failed: ${describeError(error)}`);
  } finally {
    clearTimeout(timer);
    await harness?.shutdown();
  }
  const passed = wrong.length === 0;
  return {
    writer: writer.name,
    reader: reader.name,
    expected: pair.expected,
    ...(pair.expectedFormat === undefined ? {} : { expectedFormat: pair.expectedFormat }),
    outcome,
    ...(format === undefined ? {} : { format }),
    passed,
    ...(passed
      ? {}
      : { message: `${pairName(pair)}: ${declaration(pair)}, but ${wrong.join('; ')}` }),
    ...(cause === undefined ? {} : { cause }),
  };
}

/**
 * Live-update one writer → reader pair of a version matrix (by version name) and judge it against
 * the declaration. Resolves with the verdict, never throws for a misbehaving pair; e.g. to show
 * that a handler whose declaration lies fails.
 *
 * A pair whose writer's `writes` and reader's `reads` meet must update: boot the writer, create
 * the file and preserve it (then `mutate`), `kexec_load` the reader, `CHECK_KEXEC` says ok, the
 * reboot goes through, the handover holds the file as the first of the writer's `writes` the
 * reader reads, and the reader retrieves equal content and finishes. Any other pair must be
 * refused before the blackout: `CHECK_KEXEC` names the session and token, `reboot` fails with
 * `ENOEXEC`, no `freeze` ran, the writer's kernel runs on with the file unchanged and usable, and
 * closing the session gives back every preservation.
 *
 * @throws TypeError for malformed options or a version name not in `options.versions`
 */
export async function checkVersionPair(
  options: VersionMatrixOptions,
  writer: string,
  reader: string,
): Promise<VersionPairVerdict> {
  const pair = versionPairs('checkVersionPair', options).find(
    (p) => p.writer.name === writer && p.reader.name === reader,
  );
  if (!pair) {
    throw new TypeError(
      `checkVersionPair: no pair ${inspect(writer)} → ${inspect(reader)}; the versions are ${options.versions.map((v) => v.name).join(', ')}`,
    );
  }
  return runVersionPair(options, pair);
}

/**
 * Every ordered pair of `options.versions`, one after the other (see {@link checkVersionPair}),
 * with the table of them. `describeVersionMatrix` makes one vitest test per pair instead.
 *
 * @throws TypeError at once, for malformed options (naming the option or version)
 */
export async function checkVersionMatrix(
  options: VersionMatrixOptions,
): Promise<VersionMatrixReport> {
  const pairs: VersionPairVerdict[] = [];
  for (const pair of versionPairs('checkVersionMatrix', options)) {
    pairs.push(await runVersionPair(options, pair));
  }
  return { passed: pairs.every((p) => p.passed), pairs, table: formatVersionMatrix(pairs) };
}

/** The verdicts as a table with aligned columns: writer, reader, expected, outcome, format, result. */
export function formatVersionMatrix(pairs: readonly VersionPairVerdict[]): string {
  const rows = [
    ['writer', 'reader', 'expected', 'outcome', 'format', 'result'],
    ...pairs.map((p) => [
      p.writer,
      p.reader,
      p.expected === 'updates' ? `updates as ${p.expectedFormat}` : 'refused',
      p.outcome,
      p.format ?? '-',
      p.passed ? 'ok' : 'FAILED',
    ]),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
