import { describe, expect, it } from 'vitest';
import { coldUpdateNote, median } from './cold-update-note.js';

describe('median', () => {
  it('is the middle value, or the mean of the middle two, whatever the order', () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
  });

  it('refuses no values', () => {
    expect(() => median([])).toThrow(RangeError);
  });
});

describe('coldUpdateNote', () => {
  it('says nothing of a single update: there is nothing to compare it with', () => {
    expect(coldUpdateNote([])).toBeNull();
    expect(coldUpdateNote([500])).toBeNull();
  });

  it('calls the first update cold when its blackout is over 1.5 times the others’ median', () => {
    expect(coldUpdateNote([31, 20, 10, 30])).toBe(
      'the first update was cold (JIT warm-up, first worker start): its blackout is not ' +
        "representative (31.00 ms, the others' median 20.00 ms)",
    );
  });

  it('says nothing when the first is at most 1.5 times the median, or a later one is slow', () => {
    expect(coldUpdateNote([30, 20, 10, 30])).toBeNull();
    expect(coldUpdateNote([10, 10, 100])).toBeNull();
  });
});
