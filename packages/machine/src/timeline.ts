/** One entry of the machine's timeline, which spans every kernel that ran on it. */
export type TimelineEvent =
  | {
      readonly kind: 'log';
      /** Milliseconds since the machine was created. */
      readonly time: number;
      /** Which boot of this machine the kernel was: 0 for the cold boot, then 1, 2, … */
      readonly boot: number;
      readonly version: string;
      /** Seconds since that kernel booted. */
      readonly uptime: number;
      /** printk level: 0 (emerg) … 7 (debug). */
      readonly level: number;
      readonly text: string;
    }
  | {
      readonly kind: 'trace';
      readonly time: number;
      readonly boot: number;
      readonly version: string;
      readonly name: string;
      readonly phase: 'B' | 'E' | 'i';
      readonly args?: Readonly<Record<string, string | number | boolean>>;
    };

/** A begin/end pair of trace events, from {@link pairSpans}. */
export interface TimelineSpan {
  readonly name: string;
  readonly boot: number;
  /** The kernel's version, or `"machine"` for spans of the machine itself. */
  readonly version: string;
  /** Milliseconds since the machine was created. */
  readonly start: number;
  readonly end: number;
  readonly duration: number;
  /** The begin event's arguments merged with the end event's. */
  readonly args: Readonly<Record<string, string | number | boolean>>;
}

/**
 * Pair the `B`/`E` trace events of a timeline into spans, innermost first closed first, per
 * boot, source and name. Spans still open (a kernel that never finished) are left out.
 */
export function pairSpans(timeline: readonly TimelineEvent[]): TimelineSpan[] {
  const open = new Map<string, Extract<TimelineEvent, { kind: 'trace' }>[]>();
  const spans: TimelineSpan[] = [];
  for (const event of timeline) {
    if (event.kind !== 'trace' || event.phase === 'i') continue;
    const key = `${event.boot}\0${event.version}\0${event.name}`;
    const stack = open.get(key) ?? [];
    open.set(key, stack);
    if (event.phase === 'B') {
      stack.push(event);
      continue;
    }
    const begin = stack.pop();
    if (!begin) continue;
    spans.push({
      name: event.name,
      boot: event.boot,
      version: event.version,
      start: begin.time,
      end: event.time,
      duration: event.time - begin.time,
      args: { ...begin.args, ...event.args },
    });
  }
  return spans.sort((a, b) => a.start - b.start);
}

/** Which spans {@link spansOf} keeps: those of one boot, of one name, or both. */
export interface SpanFilter {
  readonly boot?: number;
  readonly name?: string;
}

/**
 * The spans of `timeline` that `filter` keeps: {@link pairSpans} of only the events of that boot
 * and name. Events pair within one boot, source and name, so this is the same as pairing the
 * whole timeline and filtering the spans, without building a span for every event of the
 * machine's history on each call.
 */
export function spansOf(
  timeline: readonly TimelineEvent[],
  filter: SpanFilter = {},
): TimelineSpan[] {
  const { boot, name } = filter;
  if (boot === undefined && name === undefined) return pairSpans(timeline);
  return pairSpans(
    timeline.filter(
      (event) =>
        event.kind === 'trace' &&
        (boot === undefined || event.boot === boot) &&
        (name === undefined || event.name === name),
    ),
  );
}
