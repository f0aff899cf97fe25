import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromeTraceProblems, type ChromeTrace, type ChromeTraceEvent } from '@liveupdate/machine';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GLOSSARY } from '../src/glossary.js';
import { reportSchemaErrors } from './report-schema.js';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));

interface Report {
  schemaVersion: number;
  settings: Record<string, unknown>;
  host: { node: string; cores: number };
  verdict: { pass: boolean; reasons: string[] };
  notes: string[];
  liveUpdates: {
    from: string;
    to: string;
    outcome: string;
    reason: unknown;
    formats: Record<string, string>;
    blackoutMs: number;
    cache: { keys: number; verified: number; mismatches: number };
    vm: {
      blackoutMs: number;
      guestPausedMs: number;
      ring: { sequences: number; missing: number; outOfOrder: number; badChecksum: number };
      guestMemory: { pages: number; mismatches: number };
    };
    dma: {
      packetsSent: number;
      packetsDelivered: number;
      packetsDropped: number;
      iommuFaults: number;
      maxRingOccupancy: number;
      deliveredDuringBlackout: number;
    };
  }[];
}

const SMALL = ['--mib', '16', '--keys', '20000', '--guest-mib', '64'];
const run = promisify(execFile);

let dir: string;
let stdout: string;
let report: Report;
let trace: ChromeTrace;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'demo-trace-'));
  const file = join(dir, 'trace.json');
  ({ stdout } = await run(
    process.execPath,
    [MAIN, '--json', '--updates', '2', '--trace', file, ...SMALL],
    {
      encoding: 'utf8',
    },
  ));
  report = JSON.parse(stdout) as Report;
  trace = JSON.parse(await readFile(file, 'utf8')) as ChromeTrace;
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

it('live-updates the cache and the VM twice and reports what the NIC did (--json)', () => {
  expect(report.liveUpdates.map((u) => `${u.from} → ${u.to}`)).toEqual([
    '6.18.0 → 6.18.1',
    '6.18.1 → 6.18.2',
  ]);
  for (const update of report.liveUpdates) {
    expect(update.outcome).toBe('updated');
    expect(update.reason).toBeNull();
    // Read from the handover bytes: both memfds in the memfd plugin's format (the same kernel
    // build on both sides writes its newest), the iommufd and the NIC in theirs.
    // All kept by the agent: the cache's memfd, the VM's three files (stored in order: guest
    // RAM, iommufd, NIC) and its own manifest (session luod).
    expect(Object.keys(update.formats).sort()).toEqual([
      'kv-cache/1',
      'luod/1',
      'vm0/1',
      'vm0/2',
      'vm0/3',
    ]);
    expect(update.formats['kv-cache/1']).toMatch(/^memfd-v\d+$/);
    expect(update.formats['luod/1']).toBe(update.formats['kv-cache/1']);
    expect(update.formats['vm0/1']).toBe(update.formats['kv-cache/1']);
    expect(update.formats['vm0/2']).toBe('iommufd-v1');
    expect(update.formats['vm0/3']).toBe('vfio-pci-v1');
    expect(update.cache).toEqual({ keys: 20000, verified: 20000, mismatches: 0 });
    expect(update.vm.guestMemory.pages).toBeGreaterThan(0);
    expect(update.vm.guestMemory.mismatches).toBe(0);
    const { dma, vm } = update;
    expect(dma.iommuFaults).toBe(0);
    // The NIC kept delivering while the guest was paused across the kexec.
    expect(dma.deliveredDuringBlackout).toBeGreaterThan(0);
    // What piled up in the ring while nobody took packets out, and never more than it holds.
    expect(dma.maxRingOccupancy).toBeGreaterThan(0);
    expect(dma.maxRingOccupancy).toBeLessThan(8192);
    expect(vm.ring.outOfOrder + vm.ring.badChecksum).toBe(0);
    expect(vm.blackoutMs).toBeGreaterThanOrEqual(update.blackoutMs);
  }
  // The guest saw, in its own ring, at least every packet the NIC's counters say it delivered
  // during the updates (its count runs from the VM's boot, across both updates).
  const delivered = report.liveUpdates.reduce((sum, u) => sum + u.dma.packetsDelivered, 0);
  expect(report.liveUpdates.at(-1)!.vm.ring.sequences).toBeGreaterThanOrEqual(delivered);
});

describe('the JSON report', () => {
  it('validates against report.schema.json, with the settings as parsed and a passing verdict', () => {
    expect(reportSchemaErrors(report)).toBeNull();
    expect(report.schemaVersion).toBe(4);
    expect(report.settings).toEqual({
      scenario: 'same',
      mib: 16,
      keys: 20000,
      guestMib: 64,
      updates: 2,
      json: true,
      quiet: false,
      explain: false,
      trace: join(dir, 'trace.json'),
      report: null,
    });
    expect(report.host.node).toBe(process.version);
    expect(report.verdict).toEqual({ pass: true, reasons: [] });
    // Without --memcached the report is what it always was.
    expect(report).not.toHaveProperty('memcached');
  });

  it('notes a cold first update exactly when its blackout is over 1.5 times the other one', () => {
    const [first, second] = report.liveUpdates.map((u) => u.blackoutMs);
    const cold = report.notes.filter((note) => note.startsWith('the first update was cold'));
    expect(cold).toHaveLength(first! > 1.5 * second! ? 1 : 0);
    const withoutNotes: Partial<Report> = JSON.parse(stdout) as Report;
    delete withoutNotes.notes;
    expect(reportSchemaErrors(withoutNotes)).toContain("must have required property 'notes'");
  });

  it('does not validate with a field missing or of the wrong type', () => {
    const copy = (): Report => JSON.parse(stdout) as Report;
    const withoutVerdict: Partial<Report> = copy();
    delete withoutVerdict.verdict;
    expect(reportSchemaErrors(withoutVerdict)).toContain("must have required property 'verdict'");
    const stringCores = copy() as unknown as { host: { cores: unknown } };
    stringCores.host.cores = '2';
    expect(reportSchemaErrors(stringCores)).toContain('data/host/cores must be integer');
    const noBlackout = copy() as unknown as { liveUpdates: Record<string, unknown>[] };
    delete noBlackout.liveUpdates[1]!.blackoutMs;
    expect(reportSchemaErrors(noBlackout)).toContain("must have required property 'blackoutMs'");
    const negativeDrops = copy();
    negativeDrops.liveUpdates[0]!.dma.packetsDropped = -1;
    expect(reportSchemaErrors(negativeDrops)).toContain('packetsDropped must be >= 0');
  });
});

describe('the trace (--trace FILE)', () => {
  const names = (): Map<number, unknown> =>
    new Map(
      trace.traceEvents.filter((e) => e.name === 'process_name').map((e) => [e.pid, e.args!.name]),
    );
  const eventsOf = (track: string): ChromeTraceEvent[] => {
    const pid = [...names()].find(([, name]) => name === track)?.[0];
    return trace.traceEvents.filter((e) => e.pid === pid && e.ph !== 'M');
  };

  it('has a track per kernel boot, the machine, each new process and the NIC', () => {
    expect(trace.displayTimeUnit).toBe('ms');
    expect([...names().values()]).toEqual(
      expect.arrayContaining([
        'machine',
        'kernel 6.18.0 (boot 0)',
        'kernel 6.18.1 (boot 1)',
        'kernel 6.18.2 (boot 2)',
        'live update 6.18.0 → 6.18.1',
        'live update 6.18.1 → 6.18.2',
        'NIC 00:03.0',
      ]),
    );
    expect(
      [...names().values()].filter((n) => /^(cache|VMM) \(pid \d+\)$/.test(String(n))),
    ).toHaveLength(4);
    const kernelSpans = eventsOf('kernel 6.18.1 (boot 1)')
      .filter((e) => e.ph === 'X')
      .map((e) => e.name);
    // 6.18.1 booted from the handover and was live-updated in turn: both halves are on its track.
    expect(kernelSpans).toEqual(
      expect.arrayContaining(['boot', 'memory-init', 'luo-retrieve', 'reboot', 'luo-freeze']),
    );
    expect(eventsOf('machine').filter((e) => e.name === 'kexec-handoff')).toHaveLength(2);
  });

  it('puts the blackout on the same clock as the kernels: the reboot begins it', () => {
    const [blackout] = eventsOf('live update 6.18.0 → 6.18.1').filter(
      (e) => e.name === 'cache blackout',
    );
    const reboot = eventsOf('kernel 6.18.0 (boot 0)').find((e) => e.name === 'reboot')!;
    const boot = eventsOf('kernel 6.18.1 (boot 1)').find((e) => e.name === 'boot')!;
    expect(blackout!.ts).toBeCloseTo(reboot.ts, 3);
    // The new kernel boots inside the blackout.
    expect(boot.ts).toBeGreaterThan(blackout!.ts);
    expect(boot.ts + boot.dur!).toBeLessThan(blackout!.ts + blackout!.dur!);
    expect(blackout!.dur! / 1000).toBeCloseTo(report.liveUpdates[0]!.blackoutMs, 2);
  });

  it("has the NIC's packets, drops and ring occupancy, and each kernel's memory, as counters", () => {
    const nic = eventsOf('NIC 00:03.0').filter((e) => e.ph === 'C');
    const packets = nic
      .filter((e) => e.name === 'packets')
      .map((e) => e.args as { delivered: number; dropped: number });
    expect(packets.length).toBeGreaterThan(10);
    // Hardware counters only grow, and the NIC delivered across both updates.
    expect(packets.every((p, i) => i === 0 || p.delivered >= packets[i - 1]!.delivered)).toBe(true);
    expect(packets.at(-1)!.delivered - packets[0]!.delivered).toBeGreaterThan(0);
    const occupancy = nic
      .filter((e) => e.name === 'ring occupancy')
      .map((e) => (e.args as { descriptors: number }).descriptors);
    // Packets piled up in the ring while the guest was paused.
    expect(Math.max(...occupancy)).toBeGreaterThan(0);
    expect(Math.max(...occupancy)).toBeLessThan(8192);
    for (const kernel of ['kernel 6.18.0 (boot 0)', 'kernel 6.18.1 (boot 1)']) {
      const [memory] = eventsOf(kernel).filter((e) => e.ph === 'C' && e.name === 'memory');
      expect((memory!.args as { freeFrames: number }).freeFrames).toBeGreaterThan(0);
    }
    // The kernel that booted from a handover found folios preserved for it.
    const [handedIn] = eventsOf('kernel 6.18.1 (boot 1)').filter((e) => e.name === 'memory');
    expect((handedIn!.args as { preservedFolios: number }).preservedFolios).toBeGreaterThan(0);
  });

  it('has timestamps that never go back and spans that nest, in every thread', () => {
    expect(chromeTraceProblems(trace.traceEvents)).toEqual([]);
    const threads = new Set(
      trace.traceEvents.filter((e) => e.ph !== 'M').map((e) => `${e.pid}/${e.tid}`),
    );
    expect(threads.size).toBeGreaterThan(8);
  });
});

describe('the command line', () => {
  it('refuses a bad value in its own words, with the usage, and exit code 2', async () => {
    const failed = await run(process.execPath, [MAIN, '--updates', '-1'], {
      encoding: 'utf8',
    }).then(
      () => null,
      (error: { code: number; stderr: string }) => error,
    );
    expect(failed?.code).toBe(2);
    expect(failed?.stderr).toContain('--updates must be a whole number from 1 to 100, not "-1"');
    expect(failed?.stderr).toContain('usage: pnpm demo');
  });

  it('wraps its story to 100 columns off a terminal, explains each term once, ends with PASS', async () => {
    const { stdout: text } = await run(process.execPath, [MAIN, '--explain', ...SMALL], {
      encoding: 'utf8',
    });
    const lines = text.trimEnd().split('\n');
    expect(lines.at(-1)).toBe('PASS');
    // The story before the tables is prose: every line fits (no word there is 100 long).
    const story = lines.slice(
      0,
      lines.findIndex((line) => line.includes('the blackout, phase')),
    );
    expect(story.length).toBeGreaterThan(20);
    for (const line of story) expect(line.length, line).toBeLessThanOrEqual(100);
    for (const [term] of GLOSSARY) {
      expect(
        lines.filter((line) => line.startsWith(`  ⓘ ${term}: `)),
        term,
      ).toHaveLength(1);
    }
    // The agent is explained where the story introduces it, before any service uses it.
    const agentLine = lines.findIndex((line) => line.startsWith('  ⓘ agent: '));
    expect(lines[agentLine + 1]).toMatch(/^ {2}ⓘ luod: /);
    expect(lines.slice(0, agentLine).join('\n')).toMatch(/agent \(luod\) pid \d+ listens/);
    expect(lines.slice(0, agentLine).join('\n')).not.toMatch(/stores|VMM pid/);
  });

  it('--quiet: a row per update, their medians with the spread, then the verdict', async () => {
    const { stdout: text } = await run(
      process.execPath,
      [MAIN, '--mib', '16', '--keys', '1000', '--guest-mib', '16', '--updates', '3', '--quiet'],
      { encoding: 'utf8' },
    );
    const lines = text.trimEnd().split('\n');
    expect(lines[0]!.split(/ {3,}/)).toEqual([
      'update',
      'cache blackout ms',
      'VM blackout ms',
      'guest paused ms',
      'dropped',
      'keys verified',
      'kexecs',
    ]);
    expect(lines[1]).toMatch(/^─+( {3}─+){6}$/);
    const rows = lines.slice(2, 5).map((line) => line.split(/ {3,}/));
    expect(rows.map((row) => row[0])).toEqual([
      '6.18.0 → 6.18.1',
      '6.18.1 → 6.18.2',
      '6.18.2 → 6.18.3',
    ]);
    for (const [i, row] of rows.entries()) {
      expect(
        row.slice(1, 4).every((cell) => /^\d+\.\d\d$/.test(cell)),
        row.join('|'),
      ).toBe(true);
      expect(row[4]).toMatch(/^\d[\d,]*$/);
      expect(row.slice(5)).toEqual(['1,000', String(i + 1)]);
    }
    const medians = lines[5]!.split(/ {3,}/);
    const spreads = lines[6]!.trim().split(/ {3,}/);
    expect(medians[0]).toBe('median of 3 updates');
    expect(spreads[0]).toBe('spread (min–max)');
    // Each column's median is its middle row's figure, and the spread its smallest and largest.
    for (const column of [1, 2, 3]) {
      const values = rows.map((row) => row[column]!).sort((a, b) => Number(a) - Number(b));
      expect(medians[column]).toBe(values[1]);
      expect(spreads[column]).toBe(`${values[0]}–${values[2]}`);
    }
    expect([medians[5], spreads[5]]).toEqual(['1,000', '1,000–1,000']);
    // Nothing of the story: at most a note, then the verdict.
    const rest = lines.slice(7).filter((line) => line !== '');
    expect(rest.at(-1)).toBe('PASS');
    for (const line of rest.slice(0, -1)) expect(line).toMatch(/^note: |^ {2}\S/);
  });
});
