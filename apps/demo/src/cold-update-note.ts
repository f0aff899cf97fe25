/** How far above the others' median the first blackout must be to be called cold. */
export const COLD_FACTOR = 1.5;

/** The median of `values` (the mean of the middle two when their number is even). */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * A note when the first of several updates was cold, or `null`. The first update also pays for
 * the JIT warming up and the first kernel worker starting, so a first blackout more than
 * {@link COLD_FACTOR} times the median of the others is not what an update costs; the reader
 * should be told rather than left to wonder. `blackoutsMs` are the updates' cache blackouts in
 * order; with fewer than two there is nothing to compare with.
 */
export function coldUpdateNote(blackoutsMs: readonly number[]): string | null {
  if (blackoutsMs.length < 2) return null;
  const [first, ...others] = blackoutsMs;
  const othersMedian = median(others);
  if (first! <= COLD_FACTOR * othersMedian) return null;
  return (
    `the first update was cold (JIT warm-up, first worker start): its blackout is not ` +
    `representative (${first!.toFixed(2)} ms, the others' median ${othersMedian.toFixed(2)} ms)`
  );
}
