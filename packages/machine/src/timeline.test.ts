import { describe, expect, it } from 'vitest';
import { pairSpans, spansOf, type TimelineEvent } from './timeline.js';

const trace = (
  time: number,
  boot: number,
  name: string,
  phase: 'B' | 'E' | 'i',
  args?: Record<string, number>,
): TimelineEvent => ({
  kind: 'trace',
  time,
  boot,
  version: `v${boot}`,
  name,
  phase,
  ...(args ? { args } : {}),
});

describe('pairSpans', () => {
  it('pairs begin and end per boot and name, innermost first, merging their arguments', () => {
    const spans = pairSpans([
      trace(0, 0, 'boot', 'B', { a: 1 }),
      trace(1, 0, 'step', 'B'),
      trace(2, 0, 'step', 'B'),
      trace(3, 0, 'step', 'E'),
      trace(4, 0, 'step', 'E'),
      trace(5, 1, 'boot', 'B'),
      trace(6, 0, 'boot', 'E', { b: 2 }),
      trace(7, 0, 'mark', 'i'),
    ]);
    expect(spans.map((s) => [s.name, s.boot, s.start, s.end, s.duration])).toEqual([
      ['boot', 0, 0, 6, 6],
      ['step', 0, 1, 4, 3],
      ['step', 0, 2, 3, 1],
    ]);
    expect(spans[0]!.args).toEqual({ a: 1, b: 2 });
  });

  it('leaves out spans that never ended and ends without a beginning', () => {
    expect(pairSpans([trace(0, 0, 'x', 'E'), trace(1, 0, 'y', 'B')])).toEqual([]);
  });
});

describe('spansOf', () => {
  // Two boots whose spans share names and nest, with an unfinished one and an instant.
  const timeline = [
    trace(0, 0, 'boot', 'B'),
    trace(1, 0, 'step', 'B'),
    trace(2, 0, 'step', 'B'),
    trace(3, 0, 'step', 'E'),
    trace(4, 0, 'step', 'E'),
    trace(5, 0, 'boot', 'E'),
    trace(6, 1, 'boot', 'B'),
    trace(7, 1, 'step', 'B'),
    trace(8, 1, 'mark', 'i'),
    trace(9, 1, 'step', 'E'),
    trace(10, 1, 'late', 'B'),
  ];
  const all = pairSpans(timeline);

  it('keeps what pairing the whole timeline and filtering would, for every filter', () => {
    for (const filter of [
      {},
      { boot: 0 },
      { boot: 1 },
      { name: 'step' },
      { boot: 1, name: 'step' },
    ]) {
      const expected = all.filter(
        (s) =>
          (filter.boot === undefined || s.boot === filter.boot) &&
          (filter.name === undefined || s.name === filter.name),
      );
      expect(spansOf(timeline, filter)).toEqual(expected);
    }
    expect(spansOf(timeline, { boot: 1, name: 'step' }).map((s) => [s.start, s.end])).toEqual([
      [7, 9],
    ]);
    expect(spansOf(timeline, { boot: 2 })).toEqual([]);
    expect(spansOf(timeline, { name: 'late' })).toEqual([]);
  });
});
