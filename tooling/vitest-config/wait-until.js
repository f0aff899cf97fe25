// One way for tests to wait for something the machine does on its own (a device's DMA, an
// interrupt, a worker's reply): poll a condition, with a bound generous enough for a loaded
// 2-core machine, and say what was awaited when the bound is hit.

/** How long {@link until} waits by default: far longer than anything takes on a loaded machine. */
export const UNTIL_TIMEOUT_MS = 20_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Resolve once `condition()` returns (or resolves to) true, polling every 5 ms. After
 * `timeoutMs` rejects with "timed out after N s waiting for <what>".
 */
export async function until(condition, what, timeoutMs = UNTIL_TIMEOUT_MS) {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    }
    await sleep(5);
  }
}

/**
 * `promise`, or a rejection "timed out waiting for <what>" after `timeoutMs` (default
 * {@link UNTIL_TIMEOUT_MS}: the bound is there to name what never came, not to pace the test).
 */
export async function within(promise, what, timeoutMs = UNTIL_TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
