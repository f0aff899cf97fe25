import { KernelError } from '@liveupdate/machine';

/**
 * `wait_queue_head_t`: callers wait for a change and re-check their condition when woken. A wait
 * is a promise in the kernel worker, so a waiting syscall leaves the kernel and the process's
 * other syscalls running.
 */
export class WaitQueue {
  readonly #waiters = new Set<() => void>();

  /**
   * Wait for the next {@link wake}. `EINTR` when `abort` fires first (the calling process exits);
   * `what` names the wait in that error.
   */
  wait(abort: AbortSignal | undefined, what: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (abort?.aborted) {
        reject(new KernelError('EINTR', `interrupted while waiting for ${what}`));
        return;
      }
      const onAbort = (): void => {
        this.#waiters.delete(waiter);
        reject(new KernelError('EINTR', `interrupted while waiting for ${what}`));
      };
      const waiter = (): void => {
        abort?.removeEventListener('abort', onAbort);
        resolve();
      };
      this.#waiters.add(waiter);
      abort?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Wake every waiter. */
  wake(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const waiter of waiters) waiter();
  }
}
