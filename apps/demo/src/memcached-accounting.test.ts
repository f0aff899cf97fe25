import { describe, expect, it } from 'vitest';
import {
  memcachedFigures,
  type MemcachedRequestPhase,
  type MemcachedRequestRecord,
} from './memcached-accounting.js';

/** A made-up request log: each request starts at `at` and ends 1 ms later. */
function log(
  ...requests: [
    at: number,
    phase: MemcachedRequestPhase,
    op: 'set' | 'get',
    key: string,
    value: string | null,
    ok: boolean,
  ][]
): MemcachedRequestRecord[] {
  return requests.map(([at, phase, op, key, value, ok]) => ({
    phase,
    op,
    key,
    value,
    ok,
    start: at,
    end: at + 1,
  }));
}

describe('memcachedFigures', () => {
  it('counts a clean run: every request served, nothing wrong, nothing lost', () => {
    const figures = memcachedFigures(
      log(
        [0, 'load', 'set', 'a', 'a1', true],
        [10, 'during', 'set', 'a', 'a2', true],
        [20, 'during', 'get', 'a', 'a2', true],
        [30, 'readBack', 'get', 'a', 'a2', true],
      ),
    );
    expect(figures).toEqual({
      requests: 4,
      clientErrors: 0,
      outageMs: 10,
      wrongValues: 0,
      lostWrites: 0,
    });
  });

  it('counts a get that returns a value the key never held last, and a miss, as wrong values', () => {
    const figures = memcachedFigures(
      log(
        [0, 'load', 'set', 'a', 'a1', true],
        [1, 'load', 'set', 'b', 'b1', true],
        [10, 'during', 'set', 'a', 'a2', true],
        // a1 was overwritten by an acknowledged write: reading it back is wrong.
        [20, 'during', 'get', 'a', 'a1', true],
        [21, 'during', 'get', 'b', null, true],
      ),
    );
    expect(figures.wrongValues).toBe(2);
    expect(figures.lostWrites).toBe(0);
  });

  it('accepts either value around a write whose answer was lost, then only what was read', () => {
    const records = log(
      [0, 'load', 'set', 'a', 'a1', true],
      [1, 'load', 'set', 'b', 'b1', true],
      // Failed: the server may or may not have stored them.
      [10, 'during', 'set', 'a', 'a2', false],
      [11, 'during', 'set', 'b', 'b2', false],
      [20, 'during', 'get', 'a', 'a2', true],
      [21, 'during', 'get', 'b', 'b1', true],
      // a2 was read, so a1 is gone for good; b1 was read, and b2, lost in flight, may land later.
      [30, 'readBack', 'get', 'a', 'a1', true],
      [31, 'readBack', 'get', 'b', 'b2', true],
    );
    expect(memcachedFigures(records)).toMatchObject({
      requests: 6,
      clientErrors: 2,
      wrongValues: 0,
      lostWrites: 1,
    });
  });

  it('counts an acknowledged write not read back, or not readable, as lost', () => {
    const figures = memcachedFigures(
      log(
        [0, 'load', 'set', 'a', 'a1', true],
        [1, 'load', 'set', 'b', 'b1', true],
        [2, 'load', 'set', 'c', 'c1', true],
        [10, 'during', 'set', 'a', 'a2', true],
        [30, 'readBack', 'get', 'a', 'a1', true],
        [31, 'readBack', 'get', 'b', null, false],
        [32, 'readBack', 'get', 'c', 'c1', true],
      ),
    );
    expect(figures).toMatchObject({ lostWrites: 2, wrongValues: 0, clientErrors: 1 });
  });

  it('measures the outage as the longest gap between successful loop requests, by their ends', () => {
    const figures = memcachedFigures(
      log(
        [0, 'load', 'set', 'a', 'a1', true],
        [100, 'during', 'set', 'a', 'a2', true],
        [105, 'during', 'get', 'a', 'a2', true],
        [110, 'during', 'set', 'a', 'a3', false],
        [150, 'during', 'set', 'a', 'a4', false],
        [190, 'during', 'set', 'a', 'a5', true],
        [195, 'during', 'get', 'a', 'a5', true],
        // After the loop: not part of the outage, however long the pause before it.
        [900, 'readBack', 'get', 'a', 'a5', true],
      ),
    );
    // Successful loop ends: 101, 106, 191, 196.
    expect(figures.outageMs).toBe(85);
    expect(figures.clientErrors).toBe(2);
  });

  it('orders a key’s requests by when they started, whatever order they were logged in', () => {
    const [load, set, get] = log(
      [0, 'load', 'set', 'a', 'a1', true],
      [10, 'during', 'set', 'a', 'a2', true],
      [20, 'during', 'get', 'a', 'a2', true],
    );
    expect(memcachedFigures([get!, set!, load!]).wrongValues).toBe(0);
  });
});
