/**
 * When a client request was made: `load` before the live update(s), `during` the loop that runs
 * across them, `readBack` after them (each key read once).
 */
export type MemcachedRequestPhase = 'load' | 'during' | 'readBack';

/** One request a client made, as it saw it. */
export interface MemcachedRequestRecord {
  readonly phase: MemcachedRequestPhase;
  readonly op: 'set' | 'get';
  readonly key: string;
  /**
   * For a `set`, the value sent. For a successful `get`, the value returned, or `null` for a miss.
   * For a failed `get`, `null`.
   */
  readonly value: string | null;
  /** Whether the client got an answer: `STORED` for a set, a value or a miss for a get. */
  readonly ok: boolean;
  /** Host milliseconds (`performance.now()`) when the request was sent and when it ended. */
  readonly start: number;
  readonly end: number;
}

/**
 * The figures of a memcached run (docs/memcached.md, "The demo's figures"):
 *
 * - `requests`: requests that succeeded (a set acknowledged `STORED`, a get answered with a value
 *   or a miss), in every phase.
 * - `clientErrors`: requests that failed: an error, a reset, a refused connection, a timeout.
 * - `outageMs`: the longest time between two consecutive successful requests of the `during` loop
 *   (by the time they ended): the client-visible outage around the live update(s).
 * - `wrongValues`: `load` and `during` gets whose answer is not a value the key may hold: the
 *   last acknowledged write's, or that of a write made after it whose answer was lost (it failed,
 *   so it may or may not have been applied). A miss of a key that was written counts as wrong.
 * - `lostWrites`: `readBack` gets that did not return a value the key may hold by the same rule
 *   (including ones that failed): an acknowledged write not read back.
 */
export interface MemcachedFigures {
  readonly requests: number;
  readonly clientErrors: number;
  readonly outageMs: number;
  readonly wrongValues: number;
  readonly lostWrites: number;
}

/**
 * Count {@link MemcachedFigures} from the clients' records. Each key must be used by one
 * connection at a time (the clients here give each connection its own keys), so a key's records
 * in the order they started are the order the server saw them.
 */
export function memcachedFigures(records: readonly MemcachedRequestRecord[]): MemcachedFigures {
  let requests = 0;
  let clientErrors = 0;
  let wrongValues = 0;
  let lostWrites = 0;
  // Per key, the values a get may return: the last acknowledged write's first (null: never
  // written), then those of failed writes made after it, oldest first.
  const possible = new Map<string, (string | null)[]>();
  const ordered = [...records].sort((a, b) => a.start - b.start);
  for (const record of ordered) {
    if (record.ok) requests++;
    else clientErrors++;
    const values = possible.get(record.key) ?? [null];
    if (record.op === 'set') {
      possible.set(record.key, record.ok ? [record.value] : [...values, record.value]);
      continue;
    }
    const found = record.ok ? values.indexOf(record.value) : -1;
    if (found < 0) {
      if (record.phase === 'readBack') lostWrites++;
      else if (record.ok) wrongValues++;
      continue;
    }
    // The value read is the one the key holds: older ones are gone for good. A failed write made
    // after it may still land (a timed-out request can sit in the server's queue), so it stays.
    possible.set(record.key, values.slice(found));
  }
  return {
    requests,
    clientErrors,
    outageMs: longestGap(records.filter((r) => r.phase === 'during' && r.ok).map((r) => r.end)),
    wrongValues,
    lostWrites,
  };
}

/** The longest interval between consecutive times of `times`; 0 for fewer than two. */
function longestGap(times: readonly number[]): number {
  const sorted = [...times].sort((a, b) => a - b);
  let longest = 0;
  for (let i = 1; i < sorted.length; i++) longest = Math.max(longest, sorted[i]! - sorted[i - 1]!);
  return longest;
}
