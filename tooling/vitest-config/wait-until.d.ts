/** How long {@link until} waits by default: far longer than anything takes on a loaded machine. */
export declare const UNTIL_TIMEOUT_MS: number;
/**
 * Resolve once `condition()` returns (or resolves to) true, polling every 5 ms. After
 * `timeoutMs` (default {@link UNTIL_TIMEOUT_MS}) rejects with "timed out after N s waiting for
 * <what>".
 */
export declare function until(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs?: number,
): Promise<void>;
/**
 * `promise`, or a rejection "timed out waiting for <what>" after `timeoutMs` (default
 * {@link UNTIL_TIMEOUT_MS}: the bound is there to name what never came, not to pace the test).
 */
export declare function within<T>(
  promise: Promise<T>,
  what: string,
  timeoutMs?: number,
): Promise<T>;
