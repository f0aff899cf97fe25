import { describe, expect, it } from 'vitest';
import { chromeTraceProblems, toChromeTrace, type ChromeTraceEvent } from './chrome-trace.js';
import type { TimelineEvent } from './timeline.js';

const trace = (
  time: number,
  boot: number,
  name: string,
  phase: 'B' | 'E' | 'i',
  args?: Record<string, number>,
  version = `6.18.${boot}`,
): TimelineEvent => ({
  kind: 'trace',
  time,
  boot,
  version,
  name,
  phase,
  ...(args ? { args } : {}),
});

const processNames = (events: readonly ChromeTraceEvent[]): Map<number, unknown> =>
  new Map(events.filter((e) => e.name === 'process_name').map((e) => [e.pid, e.args?.name]));

describe('toChromeTrace', () => {
  it('puts each kernel boot and the machine on a named track, in microseconds', () => {
    const { traceEvents, displayTimeUnit } = toChromeTrace([
      trace(0, 0, 'boot', 'B'),
      trace(1.5, 0, 'boot', 'E'),
      trace(10, 0, 'kexec-handoff', 'B', undefined, 'machine'),
      trace(12.25, 0, 'kexec-handoff', 'E', undefined, 'machine'),
      trace(13, 1, 'kernel-running', 'i', undefined, 'machine'),
      trace(12.5, 1, 'boot', 'B'),
      trace(12.75, 1, 'boot', 'E'),
    ]);
    expect(displayTimeUnit).toBe('ms');
    const names = processNames(traceEvents);
    expect([...names.values()].sort()).toEqual([
      'kernel 6.18.0 (boot 0)',
      'kernel 6.18.1 (boot 1)',
      'machine',
    ]);
    const pidOf = (name: string): number => [...names].find(([, n]) => n === name)![0];
    const complete = traceEvents.filter((e) => e.ph === 'X');
    expect(complete.map((e) => [names.get(e.pid), e.name, e.ts, e.dur])).toEqual([
      ['kernel 6.18.0 (boot 0)', 'boot', 0, 1500],
      ['machine', 'kexec-handoff', 10_000, 2250],
      ['kernel 6.18.1 (boot 1)', 'boot', 12_500, 250],
    ]);
    const running = traceEvents.find((e) => e.name === 'kernel-running')!;
    expect([running.ph, running.pid, running.ts]).toEqual(['i', pidOf('machine'), 13_000]);
  });

  it('gives spans that overlap without nesting their own thread, so each thread nests', () => {
    // Two syscalls of two processes interleave in one kernel: a, then b begins, a ends, b ends.
    const { traceEvents } = toChromeTrace([
      trace(0, 0, 'outer', 'B'),
      trace(1, 0, 'a', 'B'),
      trace(2, 0, 'b', 'B'),
      trace(3, 0, 'a', 'E'),
      trace(4, 0, 'b', 'E'),
      trace(5, 0, 'c', 'B'),
      trace(6, 0, 'c', 'E'),
      trace(9, 0, 'outer', 'E'),
    ]);
    const tidOf = Object.fromEntries(
      traceEvents.filter((e) => e.ph === 'X').map((e) => [e.name, e.tid]),
    );
    expect(tidOf.outer).toBe(tidOf.a);
    expect(tidOf.b).not.toBe(tidOf.a);
    // Once a and b are over, c fits inside outer again.
    expect(tidOf.c).toBe(tidOf.outer);
  });

  it('lays out overlapping spans so that chromeTraceProblems finds nothing wrong', () => {
    const timeline = [
      trace(0, 0, 'outer', 'B'),
      trace(1, 0, 'a', 'B'),
      trace(2, 0, 'b', 'B'),
      trace(3, 0, 'a', 'E'),
      trace(4, 0, 'b', 'E'),
      trace(9, 0, 'outer', 'E'),
    ];
    expect(chromeTraceProblems(toChromeTrace(timeline).traceEvents)).toEqual([]);
  });

  it("turns the kernel's log into instants and memory-init's numbers into a memory counter", () => {
    const { traceEvents } = toChromeTrace([
      {
        kind: 'log',
        time: 2,
        boot: 0,
        version: '6.18.0',
        uptime: 0.002,
        level: 6,
        text: 'KHO: on',
      },
      trace(1, 0, 'memory-init', 'B'),
      trace(3, 0, 'memory-init', 'E', { freeFrames: 500, preservedFolios: 7 }),
    ]);
    expect(traceEvents.find((e) => e.cat === 'log')).toMatchObject({
      name: 'KHO: on',
      ph: 'i',
      ts: 2000,
      args: { level: 6 },
    });
    expect(traceEvents.find((e) => e.ph === 'C')).toMatchObject({
      name: 'memory',
      ts: 3000,
      args: { freeFrames: 500, preservedFolios: 7 },
    });
  });

  it("adds the caller's spans and counters on tracks of their own, after the kernels", () => {
    const { traceEvents, metadata } = toChromeTrace(
      [trace(0, 0, 'boot', 'B'), trace(1, 0, 'boot', 'E')],
      {
        spans: [{ track: 'cache (pid 3)', name: 'retrieve', start: 2, end: 2.5 }],
        counters: [
          { track: 'NIC 00:03.0', name: 'packets', time: 2, values: { delivered: 4 } },
          { track: 'NIC 00:03.0', name: 'packets', time: 1, values: { delivered: 1 } },
        ],
        metadata: { demo: true },
      },
    );
    const names = processNames(traceEvents);
    const cache = [...names].find(([, n]) => n === 'cache (pid 3)')![0];
    const nic = [...names].find(([, n]) => n === 'NIC 00:03.0')![0];
    const kernel = [...names].find(([, n]) => n === 'kernel 6.18.0 (boot 0)')![0];
    expect(cache).toBeGreaterThan(kernel);
    expect(traceEvents.find((e) => e.pid === cache && e.ph === 'X')).toMatchObject({
      name: 'retrieve',
      ts: 2000,
      dur: 500,
    });
    // Sorted by time, whatever order the samples came in.
    expect(traceEvents.filter((e) => e.pid === nic && e.ph === 'C').map((e) => e.ts)).toEqual([
      1000, 2000,
    ]);
    expect(metadata).toMatchObject({ demo: true });
  });

  it('keeps back-to-back spans in one thread, each ending (ts + dur) where the next begins', () => {
    // Each span ends where the next begins. These times, in microseconds, round so that
    // ts + dur of the first would pass the second's ts by a rounding error if dur were rounded
    // on its own.
    const times = [2789.4433899505034, 2790.5982383784385, 2795.3252434248634];
    const spans = times.slice(1).map((end, i) => ({
      track: 'process',
      name: `lap ${i}`,
      start: times[i]!,
      end,
    }));
    const complete = toChromeTrace([], { spans }).traceEvents.filter((e) => e.ph === 'X');
    expect(new Set(complete.map((e) => e.tid))).toEqual(new Set([1]));
    for (const [i, event] of complete.slice(1).entries()) {
      expect(complete[i]!.ts + complete[i]!.dur!).toBeCloseTo(event.ts, 6);
    }
  });

  describe('chromeTraceProblems', () => {
    const span = (name: string, ts: number, dur: number, tid = 1): ChromeTraceEvent => ({
      name,
      ph: 'X',
      ts,
      dur,
      pid: 7,
      tid,
    });
    const processName: ChromeTraceEvent = {
      name: 'process_name',
      ph: 'M',
      ts: 0,
      pid: 7,
      tid: 0,
      args: { name: 'kernel 6.18.0 (boot 0)' },
    };

    it('finds a span that starts inside another and ends after it, naming the thread', () => {
      expect(
        chromeTraceProblems([processName, span('outer', 0, 10), span('inner', 5, 10)]),
      ).toEqual(['kernel 6.18.0 (boot 0)/1: inner ends after outer, which it starts in']);
    });

    it('finds a timestamp that goes back in a thread, and not across threads', () => {
      expect(chromeTraceProblems([span('late', 5, 1), span('early', 2, 1)])).toEqual([
        '7/1: early at 2 after 5',
      ]);
      expect(chromeTraceProblems([span('late', 5, 1, 1), span('early', 2, 1, 2)])).toEqual([]);
    });

    it('takes spans that nest, follow each other or touch', () => {
      expect(
        chromeTraceProblems([span('outer', 0, 10), span('inner', 2, 8), span('next', 10, 1)]),
      ).toEqual([]);
    });
  });

  it('refuses a span that ends before it starts, naming it', () => {
    expect(() =>
      toChromeTrace([], { spans: [{ track: 't', name: 'backwards', start: 2, end: 1 }] }),
    ).toThrow('span "backwards" of track "t" ends (1) before it starts (2)');
  });
});
