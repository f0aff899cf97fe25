import { KernelError } from '@liveupdate/machine';
import { injectable } from 'tsyringe';

/**
 * A reboot notifier. `notify` runs in the reboot syscall before the kexec; throwing a `KernelError`
 * aborts the kexec and `reboot` returns its errno. `abort` runs when a later step fails after
 * this notifier succeeded, so it can undo what `notify` did.
 */
export interface RebootNotifier {
  readonly name: string;
  /** Higher runs first; equal priorities run in registration order. Default 0. */
  readonly priority?: number;
  notify(): void | Promise<void>;
  abort?(): void | Promise<void>;
}

/**
 * The reboot notifier chain. Unlike Linux's (whose callbacks cannot fail), a notifier here may
 * refuse the kexec — that is how LUO's `liveupdate_reboot()` is hooked in.
 */
@injectable()
export class RebootNotifierChain {
  readonly #notifiers: RebootNotifier[] = [];

  register(notifier: RebootNotifier): void {
    if (this.#notifiers.includes(notifier)) {
      throw new KernelError('EEXIST', `reboot notifier ${notifier.name} is already registered`);
    }
    this.#notifiers.push(notifier);
  }

  unregister(notifier: RebootNotifier): void {
    const index = this.#notifiers.indexOf(notifier);
    if (index < 0)
      throw new KernelError('ENOENT', `reboot notifier ${notifier.name} is not registered`);
    this.#notifiers.splice(index, 1);
  }

  /**
   * Call every notifier in priority order. If one throws, those that already succeeded are
   * aborted in reverse order and the error is rethrown (a non-kernel error becomes `EIO`).
   * On success, returns a function that aborts them all, for a failure after the chain.
   */
  async call(
    onAbortError: (notifier: RebootNotifier, error: unknown) => void,
  ): Promise<() => Promise<void>> {
    const ordered = this.#notifiers
      .map((notifier, index) => ({ notifier, index }))
      .sort((a, b) => (b.notifier.priority ?? 0) - (a.notifier.priority ?? 0) || a.index - b.index)
      .map((entry) => entry.notifier);
    const done: RebootNotifier[] = [];
    const abort = async (): Promise<void> => {
      for (const notifier of [...done].reverse()) {
        try {
          await notifier.abort?.();
        } catch (error) {
          onAbortError(notifier, error);
        }
      }
    };
    for (const notifier of ordered) {
      try {
        await notifier.notify();
      } catch (error) {
        await abort();
        if (KernelError.isInstance(error)) throw error;
        throw new KernelError(
          'EIO',
          `reboot notifier ${notifier.name} failed: ${(error as Error).message}`,
          {
            cause: error,
          },
        );
      }
      done.push(notifier);
    }
    return abort;
  }
}
