// `pnpm demo --memcached --json`: the cache serves memcached through two live updates while
// memcache-client (and Debian's libmemcached-tools, when installed) drive it from the host.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, expect, it } from 'vitest';
import { missingLibmemcachedTools } from '../src/memcached-tools.js';
import { reportSchemaErrors } from './report-schema.js';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const run = promisify(execFile);

interface Report {
  settings: Record<string, unknown>;
  verdict: { pass: boolean; reasons: string[] };
  notes: string[];
  liveUpdates: { outcome: string }[];
  memcached?: {
    requests: number;
    clientErrors: number;
    outageMs: number;
    wrongValues: number;
    lostWrites: number;
  };
}

const missing = missingLibmemcachedTools();
const inCi = process.env.CI === 'true';
if (missing.length > 0 && !inCi) {
  console.warn(
    `the --memcached demo runs without ${missing.join(', ')} ` +
      '(Debian: apt-get install libmemcached-tools); under CI=true this test fails instead',
  );
}

let report: Report;

beforeAll(async () => {
  const { stdout } = await run(
    process.execPath,
    [
      MAIN,
      '--memcached',
      '--json',
      '--updates',
      '2',
      '--mib',
      '16',
      '--keys',
      '20000',
      '--guest-mib',
      '64',
    ],
    { encoding: 'utf8' },
  );
  report = JSON.parse(stdout) as Report;
});

it('validates against report.schema.json, with --memcached in its settings', () => {
  expect(reportSchemaErrors(report)).toBeNull();
  expect(report.settings.memcached).toBe(true);
  expect(report.liveUpdates.map((u) => u.outcome)).toEqual(['updated', 'updated']);
});

it('serves the clients through both updates: requests, 0 wrong values, 0 lost writes, a pass', () => {
  const figures = report.memcached!;
  // 500 keys loaded and 500 read back, 50 loop requests after each update at least.
  expect(figures.requests).toBeGreaterThan(500 + 500 + 2 * 50);
  expect(figures.wrongValues).toBe(0);
  expect(figures.lostWrites).toBe(0);
  // The servers were gone between the kexecs and the new caches' listen.
  expect(figures.outageMs).toBeGreaterThan(0);
  expect(report.verdict).toEqual({ pass: true, reasons: [] });
});

it("ran Debian's libmemcached-tools too, or says in a note which were missing (never under CI)", () => {
  const note = report.notes.find((n) => n.includes('libmemcached-tools'));
  if (inCi) expect({ missing, note }).toEqual({ missing: [], note: undefined });
  expect(note === undefined).toBe(missing.length === 0);
});

it('fails a report whose memcached figures lack a field', () => {
  const broken = structuredClone(report);
  delete (broken.memcached as Partial<Report['memcached']>)!.lostWrites;
  expect(reportSchemaErrors(broken)).toContain("must have required property 'lostWrites'");
});
