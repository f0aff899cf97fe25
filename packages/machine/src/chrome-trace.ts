import { pairSpans, type TimelineEvent } from './timeline.js';

type TraceArgs = Readonly<Record<string, string | number | boolean>>;

/**
 * One event of the Chrome Trace Event format: `X` a complete span, `i` an instant, `C` a counter
 * sample, `M` metadata (a track's name or order). `ts` and `dur` are microseconds.
 */
export interface ChromeTraceEvent {
  readonly name: string;
  readonly ph: 'X' | 'i' | 'C' | 'M';
  readonly ts: number;
  readonly pid: number;
  readonly tid: number;
  readonly dur?: number;
  readonly cat?: string;
  /** Scope of an instant: `t`, its thread. */
  readonly s?: 't';
  readonly args?: Readonly<Record<string, unknown>>;
}

/** The JSON object form of a Chrome trace, which Perfetto and `chrome://tracing` open. */
export interface ChromeTrace {
  readonly traceEvents: ChromeTraceEvent[];
  readonly displayTimeUnit: 'ms';
  readonly metadata: Readonly<Record<string, unknown>>;
}

/** A span measured outside the kernels (by a process around its syscalls, say), on its own track. */
export interface TraceTrackSpan {
  /** The track's name, e.g. `"cache (pid 4)"`; spans and counters of one name share a track. */
  readonly track: string;
  readonly name: string;
  /** Milliseconds since the machine was created, as `machine.now()` gives them. */
  readonly start: number;
  readonly end: number;
  readonly args?: TraceArgs;
}

/** One sample of a counter: each of `values` becomes a series of the counter `name`. */
export interface TraceCounterSample {
  readonly track: string;
  readonly name: string;
  /** Milliseconds since the machine was created. */
  readonly time: number;
  readonly values: Readonly<Record<string, number>>;
}

/** Options of {@link toChromeTrace}: what the timeline does not hold. */
export interface ChromeTraceOptions {
  readonly spans?: readonly TraceTrackSpan[];
  readonly counters?: readonly TraceCounterSample[];
  /** Merged into the trace's `metadata`. */
  readonly metadata?: Readonly<Record<string, unknown>>;
}

/** Chrome trace process ids: the machine, then one per kernel boot, then the caller's tracks. */
const MACHINE_PID = 1;
const KERNEL_PID_BASE = 100;
const TRACK_PID_BASE = 10_000;

/** Far below the trace's resolution (1 ns), far above floating-point error on µs since boot. */
const TOUCHING_US = 1e-6;

/** Microseconds, to the nanosecond, from the timeline's milliseconds. */
const micros = (ms: number): number => Math.round(ms * 1e6) / 1e3;

interface PlacedSpan {
  readonly name: string;
  /** Microseconds; `end` is `start + dur` computed as a reader computes it, so lanes nest for it. */
  readonly start: number;
  readonly dur: number;
  readonly end: number;
  readonly cat: string;
  readonly args?: TraceArgs;
}

/**
 * The machine's timeline (and the caller's own spans and counters) as a Chrome trace, on one
 * clock: microseconds since the machine was created.
 *
 * Tracks (Chrome "processes"): `machine` (its `kexec-handoff` spans and `kernel-running`
 * instants); one per kernel boot, named `kernel 6.18.0 (boot 0)`, with its spans, its log lines as
 * instants and a `memory` counter from its `memory-init` (free frames, preserved folios handed
 * in); then one per track name of `options`. Spans still open are left out, as in
 * {@link pairSpans}. Spans that overlap without nesting (two processes in one kernel at once) go
 * to separate threads of their track, so each thread's spans nest.
 *
 * @example
 * ```ts
 * await writeFile('trace.json', JSON.stringify(toChromeTrace(machine.timeline)));
 * // open it in https://ui.perfetto.dev or chrome://tracing
 * ```
 */
export function toChromeTrace(
  timeline: readonly TimelineEvent[],
  options: ChromeTraceOptions = {},
): ChromeTrace {
  const events: ChromeTraceEvent[] = [];
  const spansOf = new Map<number, PlacedSpan[]>();
  const names = new Map<number, string>();
  const addSpan = (pid: number, span: PlacedSpan): void => {
    const list = spansOf.get(pid) ?? [];
    spansOf.set(pid, list);
    list.push(span);
  };
  names.set(MACHINE_PID, 'machine');

  for (const event of timeline) {
    const pid =
      event.kind === 'trace' && event.version === 'machine' ? MACHINE_PID : kernelPid(event.boot);
    if (pid !== MACHINE_PID) names.set(pid, `kernel ${event.version} (boot ${event.boot})`);
    if (event.kind === 'log') {
      events.push({
        name: event.text,
        ph: 'i',
        s: 't',
        ts: micros(event.time),
        pid,
        tid: 1,
        cat: 'log',
        args: { level: event.level, uptime: event.uptime },
      });
    } else if (event.phase === 'i') {
      events.push({
        name: event.name,
        ph: 'i',
        s: 't',
        ts: micros(event.time),
        pid,
        tid: 1,
        cat: 'trace',
        ...(event.args ? { args: event.args } : {}),
      });
    } else if (event.phase === 'E' && event.name === 'memory-init' && event.args) {
      events.push({
        name: 'memory',
        ph: 'C',
        ts: micros(event.time),
        pid,
        tid: 0,
        args: numericArgs(event.args),
      });
    }
  }
  for (const span of pairSpans(timeline)) {
    const pid = span.version === 'machine' ? MACHINE_PID : kernelPid(span.boot);
    addSpan(pid, {
      name: span.name,
      ...placed(span.start, span.end),
      cat: span.version === 'machine' ? 'machine' : 'kernel',
      args: span.args,
    });
  }

  const trackPids = new Map<string, number>();
  const trackPid = (track: string): number => {
    let pid = trackPids.get(track);
    if (pid === undefined) {
      pid = TRACK_PID_BASE + trackPids.size;
      trackPids.set(track, pid);
      names.set(pid, track);
    }
    return pid;
  };
  for (const span of options.spans ?? []) {
    if (!(span.end >= span.start)) {
      throw new RangeError(
        `toChromeTrace: span "${span.name}" of track "${span.track}" ends (${span.end}) before it starts (${span.start})`,
      );
    }
    addSpan(trackPid(span.track), {
      name: span.name,
      ...placed(span.start, span.end),
      cat: 'user',
      ...(span.args ? { args: span.args } : {}),
    });
  }
  for (const sample of options.counters ?? []) {
    events.push({
      name: sample.name,
      ph: 'C',
      ts: micros(sample.time),
      pid: trackPid(sample.track),
      tid: 0,
      args: sample.values,
    });
  }

  for (const [pid, spans] of spansOf) {
    for (const [lane, lanes] of nestedLanes(spans).entries()) {
      for (const span of lanes) {
        events.push({
          name: span.name,
          ph: 'X',
          ts: span.start,
          dur: span.dur,
          pid,
          tid: lane + 1,
          cat: span.cat,
          ...(span.args && Object.keys(span.args).length > 0 ? { args: span.args } : {}),
        });
      }
    }
  }

  // Per track, time order; at one instant the longer span first, so it opens around the shorter.
  events.sort((a, b) => a.ts - b.ts || (b.dur ?? 0) - (a.dur ?? 0));
  const metadata: ChromeTraceEvent[] = [...names].flatMap(([pid, name]) => [
    { name: 'process_name', ph: 'M', ts: 0, pid, tid: 0, args: { name } },
    { name: 'process_sort_index', ph: 'M', ts: 0, pid, tid: 0, args: { sort_index: pid } },
  ]);
  return {
    traceEvents: [...metadata, ...events],
    displayTimeUnit: 'ms',
    metadata: {
      clock: 'microseconds since the machine was created',
      source: '@liveupdate/machine toChromeTrace',
      ...options.metadata,
    },
  };
}

/** Start and duration in microseconds, and the end a reader computes from them. */
function placed(startMs: number, endMs: number): Pick<PlacedSpan, 'start' | 'dur' | 'end'> {
  const start = micros(startMs);
  const dur = Math.round((micros(endMs) - start) * 1e3) / 1e3;
  return { start, dur, end: start + dur };
}

function kernelPid(boot: number): number {
  return KERNEL_PID_BASE + boot;
}

function numericArgs(args: TraceArgs): Record<string, number> {
  return Object.fromEntries(
    Object.entries(args).filter((entry): entry is [string, number] => typeof entry[1] === 'number'),
  );
}

/**
 * Lay spans out in lanes so that within each lane every span lies inside the one it follows or
 * after it: the first lane whose open spans can hold it takes it. Back-to-back spans touch up to
 * {@link TOUCHING_US}: `ts + dur` in floating point may pass the next `ts` by a rounding error.
 */
function nestedLanes(spans: readonly PlacedSpan[]): PlacedSpan[][] {
  const ordered = [...spans].sort((a, b) => a.start - b.start || b.end - a.end);
  const lanes: { placed: PlacedSpan[]; open: PlacedSpan[] }[] = [];
  for (const span of ordered) {
    let lane = lanes.find(({ open }) => {
      while (open.length > 0 && open.at(-1)!.end <= span.start + TOUCHING_US) open.pop();
      return open.length === 0 || open.at(-1)!.end + TOUCHING_US >= span.end;
    });
    if (!lane) {
      lane = { placed: [], open: [] };
      lanes.push(lane);
    }
    lane.placed.push(span);
    lane.open.push(span);
  }
  return lanes.map((lane) => lane.placed);
}

/**
 * What is wrong with a trace's timing, per thread (`pid`/`tid`, named by the `process_name`
 * metadata when it has one): a timestamp earlier than the one before it, and a span (`X`) that
 * starts inside another but ends after it. Empty when every thread's events are in time order and
 * its spans nest — what Perfetto and `chrome://tracing` need to draw them as a stack. Spans that
 * touch may overlap by {@link TOUCHING_US}.
 */
export function chromeTraceProblems(events: readonly ChromeTraceEvent[]): string[] {
  const processNames = new Map<number, unknown>();
  for (const event of events) {
    if (event.ph === 'M' && event.name === 'process_name') {
      processNames.set(event.pid, event.args?.['name']);
    }
  }
  const problems: string[] = [];
  const threads = new Map<string, { last: number; open: ChromeTraceEvent[] }>();
  const endOf = (event: ChromeTraceEvent): number => event.ts + (event.dur ?? 0);
  for (const event of events) {
    if (event.ph === 'M') continue;
    const key = `${String(processNames.get(event.pid) ?? event.pid)}/${event.tid}`;
    const thread = threads.get(key) ?? { last: -Infinity, open: [] };
    threads.set(key, thread);
    if (event.ts < thread.last) {
      problems.push(`${key}: ${event.name} at ${event.ts} after ${thread.last}`);
    }
    thread.last = event.ts;
    if (event.ph !== 'X') continue;
    while (thread.open.length > 0 && endOf(thread.open.at(-1)!) <= event.ts + TOUCHING_US) {
      thread.open.pop();
    }
    const parent = thread.open.at(-1);
    if (parent && endOf(event) > endOf(parent) + TOUCHING_US) {
      problems.push(`${key}: ${event.name} ends after ${parent.name}, which it starts in`);
    }
    thread.open.push(event);
  }
  return problems;
}
