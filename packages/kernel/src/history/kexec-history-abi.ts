import {
  decodeFdt,
  encodeFdt,
  fdtNode,
  fdtValue,
  getProperty,
  readString,
  readU64,
  type FdtNode,
} from '@liveupdate/fdt';

/** Name of the kernel's history subtree in the KHO root FDT. */
export const KEXEC_HISTORY_SUBTREE = 'kexec-history';
/** The history blob's format, as its `compatible` and the kernel's image note name it. */
export const KEXEC_HISTORY_COMPATIBLE = 'kexec-history-v1';
/** The most of its log a kernel hands on: its last 16 KiB, cut at a line. */
export const KEXEC_HISTORY_LOG_MAX = 16 * 1024;
/** Longest kernel version string carried (`UTS_RELEASE` is at most 64 bytes). */
export const KEXEC_HISTORY_VERSION_MAX = 64;
/** The phases a kernel records of its side of an update, in the order they happen. */
export const KEXEC_HISTORY_PHASES = ['reboot', 'kexec-check', 'reboot-notifiers'] as const;
export type KexecHistoryPhase = (typeof KEXEC_HISTORY_PHASES)[number];

/** One phase: host-clock microseconds (`performance.timeOrigin + now()`, as the kernel log's). */
export interface PhaseTimes {
  readonly start: number;
  readonly end: number;
}

/** What a kernel hands the next one about itself and the update that leaves it. */
export interface KexecHistory {
  /**
   * Live updates since the last cold boot, the one this history crosses included (≥ 1);
   * `undefined` when the writer did not know it, because the history it received was absent or
   * damaged (written as 0). Once lost, the count stays unknown until the next cold boot.
   */
  readonly kexecCount: number | undefined;
  /** The writing kernel's version. */
  readonly version: string;
  /** The last {@link KEXEC_HISTORY_LOG_MAX} bytes of its log, whole lines. */
  readonly log: string;
  /** When each of its update phases began and ended. */
  readonly phases: Readonly<Partial<Record<KexecHistoryPhase, PhaseTimes>>>;
}

/** The incoming history is not what a writer of {@link KEXEC_HISTORY_COMPATIBLE} produces. */
export class KexecHistoryError extends Error {
  override readonly name = 'KexecHistoryError';
}

const LE = { littleEndian: true };
const PROPERTIES = ['compatible', 'kexec-count', 'version', 'log'];
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Encode a history as its FDT (DTB v17): the root's `compatible`, `kexec-count` (u64),
 * `version` (string), `log` (bytes, UTF-8 without NUL) and a node `phases` with one property per
 * recorded phase, `<u64 start, u64 end>` in microseconds. u64s are little-endian, as KHO's.
 */
export function encodeKexecHistory(history: KexecHistory): Uint8Array {
  const phases: Record<string, Uint8Array> = {};
  for (const name of KEXEC_HISTORY_PHASES) {
    const times = history.phases[name];
    if (!times) continue;
    const value = new Uint8Array(16);
    const view = new DataView(value.buffer);
    view.setBigUint64(0, BigInt(times.start), true);
    view.setBigUint64(8, BigInt(times.end), true);
    phases[name] = value;
  }
  return encodeFdt(
    fdtNode(
      '',
      {
        compatible: fdtValue.string(KEXEC_HISTORY_COMPATIBLE),
        'kexec-count': fdtValue.u64(BigInt(history.kexecCount ?? 0), LE),
        version: fdtValue.string(history.version),
        log: fdtValue.bytes(new TextEncoder().encode(history.log)),
      },
      [fdtNode('phases', phases)],
    ),
  );
}

/**
 * Decode and check a history blob against what {@link encodeKexecHistory} writes: a valid FDT
 * of exactly these properties and the `phases` node, `compatible` {@link KEXEC_HISTORY_COMPATIBLE},
 * a count from 0 (not known) to 2^53 − 1, a printable version of 1..64 bytes, a log of at most 16 KiB of
 * UTF-8 without NUL, known phase names each `<start, end>` with 0 < start ≤ end ≤ `nowUs`.
 * Throws {@link KexecHistoryError} naming the field and the value.
 */
export function decodeKexecHistory(blob: Uint8Array, nowUs: number): KexecHistory {
  let root: FdtNode;
  try {
    root = decodeFdt(blob, { maxDepth: 1 }).root;
  } catch (error) {
    throw new KexecHistoryError(`not a valid FDT: ${(error as Error).message}`);
  }
  const fail = (what: string): never => {
    throw new KexecHistoryError(what);
  };
  for (const { name } of root.properties) {
    if (!PROPERTIES.includes(name)) fail(`unexpected property "${name}"`);
  }
  for (const name of PROPERTIES) {
    if (getProperty(root, name) === undefined) fail(`no property "${name}"`);
  }
  if (root.children.length !== 1 || root.children[0]!.name !== 'phases') {
    fail(`nodes ${JSON.stringify(root.children.map((c) => c.name))}, not ["phases"]`);
  }
  const read = <T>(what: string, get: () => T): T => {
    try {
      return get();
    } catch (error) {
      return fail(`${what}: ${(error as Error).message}`);
    }
  };
  const compatible = read('compatible', () => readString(root, 'compatible'));
  if (compatible !== KEXEC_HISTORY_COMPATIBLE) fail(`compatible "${compatible}"`);
  const count = read('kexec-count', () => readU64(root, 'kexec-count', LE));
  if (count > BigInt(Number.MAX_SAFE_INTEGER)) fail(`kexec-count ${count}`);
  const version = read('version', () => readString(root, 'version'));
  if (
    version.length === 0 ||
    new TextEncoder().encode(version).length > KEXEC_HISTORY_VERSION_MAX ||
    !/^[\x20-\x7e]+$/.test(version)
  ) {
    fail(`version ${JSON.stringify(version)}`);
  }
  const logBytes = getProperty(root, 'log')!;
  if (logBytes.length > KEXEC_HISTORY_LOG_MAX) fail(`log of ${logBytes.length} bytes`);
  const log = read('log', () => utf8.decode(logBytes));
  if (log.includes('\0')) fail('log holds a NUL byte');
  const phases: Partial<Record<KexecHistoryPhase, PhaseTimes>> = {};
  for (const { name, value } of root.children[0]!.properties) {
    if (!(KEXEC_HISTORY_PHASES as readonly string[]).includes(name)) fail(`phase "${name}"`);
    if (value.length !== 16) fail(`phase ${name} of ${value.length} bytes, not 16`);
    const view = new DataView(value.buffer, value.byteOffset, 16);
    const start = view.getBigUint64(0, true);
    const end = view.getBigUint64(8, true);
    if (start === 0n || start > end || end > BigInt(Math.ceil(nowUs))) {
      fail(`phase ${name} <${start} ${end}> is not 0 < start ≤ end ≤ now (${Math.ceil(nowUs)})`);
    }
    phases[name as KexecHistoryPhase] = { start: Number(start), end: Number(end) };
  }
  return { kexecCount: count === 0n ? undefined : Number(count), version, log, phases };
}

/** The last `max` bytes of `lines` joined with newlines, cut at a line. */
export function logTail(lines: readonly string[], max = KEXEC_HISTORY_LOG_MAX): string {
  const encoder = new TextEncoder();
  const kept: string[] = [];
  let bytes = 0;
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i]!.replaceAll('\0', '');
    const size = encoder.encode(line).length + 1;
    if (bytes + size > max) break;
    kept.push(line);
    bytes += size;
  }
  return kept
    .reverse()
    .map((line) => `${line}\n`)
    .join('');
}
