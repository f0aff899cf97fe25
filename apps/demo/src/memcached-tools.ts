import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import type { MemcachedRequestPhase, MemcachedRequestRecord } from './memcached-accounting.js';

/** Debian's libmemcached-tools (`apt-get install libmemcached-tools`), by their Debian names. */
export const LIBMEMCACHED_TOOLS = {
  memcslap: '/usr/bin/memcslap',
  memccp: '/usr/bin/memccp',
  memccat: '/usr/bin/memccat',
} as const;

/** Which of {@link LIBMEMCACHED_TOOLS} are not installed. */
export function missingLibmemcachedTools(): string[] {
  return Object.values(LIBMEMCACHED_TOOLS).filter((path) => !existsSync(path));
}

/** How a tool ended: its exit code (`null` if killed, e.g. by the time bound) and its output. */
export interface ToolRun {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Run `path` with `args` to its end or to `timeoutMs` (then killed), never throwing. */
export function runTool(
  path: string,
  args: readonly string[],
  timeoutMs: number,
): Promise<ToolRun> {
  return new Promise((resolve) => {
    execFile(path, args, { encoding: 'buffer', timeout: timeoutMs }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
      resolve({ code, stdout, stderr: stderr.toString('utf8') });
    });
  });
}

/** A value as the accounting records it: its length and SHA-256, not megabytes of text. */
const digest = (bytes: Uint8Array): string =>
  `${bytes.length}:${createHash('sha256').update(bytes).digest('hex')}`;

/**
 * `memccp` of `file` (stored under its base name) to 127.0.0.1:`port`, recorded as a `set` of
 * `phase` whose value is the file's digest.
 */
export async function memccpRecord(
  port: number,
  file: string,
  bytes: Uint8Array,
  phase: MemcachedRequestPhase,
  timeoutMs: number,
): Promise<MemcachedRequestRecord> {
  const start = performance.now();
  const run = await runTool(
    LIBMEMCACHED_TOOLS.memccp,
    [`--servers=127.0.0.1:${port}`, file],
    timeoutMs,
  );
  return {
    phase,
    op: 'set',
    key: basename(file),
    value: digest(bytes),
    ok: run.code === 0,
    start,
    end: performance.now(),
  };
}

/**
 * `memccat` of `key` from 127.0.0.1:`port`, recorded as a `get` of `phase` whose value is the
 * digest of what it printed (it adds a newline after each value).
 */
export async function memccatRecord(
  port: number,
  key: string,
  phase: MemcachedRequestPhase,
  timeoutMs: number,
): Promise<MemcachedRequestRecord> {
  const start = performance.now();
  const run = await runTool(
    LIBMEMCACHED_TOOLS.memccat,
    [`--servers=127.0.0.1:${port}`, key],
    timeoutMs,
  );
  const ok = run.code === 0 && run.stdout.at(-1) === 0x0a;
  return {
    phase,
    op: 'get',
    key,
    value: ok ? digest(run.stdout.subarray(0, -1)) : null,
    ok,
    start,
    end: performance.now(),
  };
}

/** What `memcslap` reported, for the story. */
export interface MemcslapRun {
  readonly args: readonly string[];
  readonly code: number | null;
  /** Its output's non-empty lines, stdout then stderr. */
  readonly lines: readonly string[];
}

/**
 * Start `memcslap` against 127.0.0.1:`port`: `concurrency` threads each running `executeNumber`
 * sets. It is a load generator: it reports its own time and errors, which the demo prints but
 * does not count.
 */
export async function memcslap(
  port: number,
  concurrency: number,
  executeNumber: number,
  timeoutMs: number,
): Promise<MemcslapRun> {
  const args = [
    `--servers=127.0.0.1:${port}`,
    '--test=set',
    `--concurrency=${concurrency}`,
    `--execute-number=${executeNumber}`,
  ];
  const run = await runTool(LIBMEMCACHED_TOOLS.memcslap, args, timeoutMs);
  const lines = `${run.stdout.toString('utf8')}\n${run.stderr}`
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
  return { args, code: run.code, lines };
}
