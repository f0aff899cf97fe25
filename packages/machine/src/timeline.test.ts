import { describe, expect, it } from 'vitest';
import { pairSpans, type TimelineEvent } from './timeline.js';

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
