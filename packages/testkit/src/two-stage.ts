import { LiveUpdateDevice } from '@liveupdate/core';
import type { Process } from '@liveupdate/machine';
import { bootForLiveUpdate, type BootForLiveUpdateOptions } from './live-update-harness.js';

/** Options of {@link twoStage}: the machine's, and the two halves of the test. */
export interface TwoStageOptions<T, R> extends BootForLiveUpdateOptions {
  /**
   * Stage 1, in the first kernel: create sessions and preserve files through `device`. Sessions
   * whose fds `process` holds when it returns are handed over. What it returns is passed to
   * {@link after}; it stays in the test's own thread (it is what the test expects to find, not a
   * way for the kernel's state to cross the kexec).
   */
  before(process: Process, device: LiveUpdateDevice): Promise<T>;
  /**
   * Stage 2, in the next kernel: retrieve the sessions and check what arrived. `device` is
   * already open; opening it deserialized the incoming sessions. Its result is `twoStage`'s.
   */
  after(process: Process, device: LiveUpdateDevice, carried: T): Promise<R>;
}

/**
 * The two-stage live-update test in one call: boot a LUO kernel with `modules`, open
 * `/dev/liveupdate` in a process and run {@link TwoStageOptions.before}, live-update through that
 * process, open `/dev/liveupdate` in a process of the new kernel and run
 * {@link TwoStageOptions.after}. The machine is shut down afterwards, whether the stages passed
 * or threw.
 *
 * @example
 * ```ts
 * const text = await twoStage({
 *   modules: [handlerModuleUrl],
 *   async before(process, device) {
 *     const session = await device.createSession('app');
 *     await session.preserveFd(await createMyFile(process), 1n);
 *   },
 *   async after(process, device) {
 *     const session = await device.retrieveSession('app');
 *     const fd = await session.retrieveFd(1n);
 *     await session.finish();
 *     return process.pread(fd, 64, 0);
 *   },
 * });
 * ```
 *
 * @throws whatever a stage throws, or the live update's error (see `LiveUpdateHarness.liveUpdate`)
 */
export async function twoStage<T, R>(options: TwoStageOptions<T, R>): Promise<R> {
  const harness = await bootForLiveUpdate(options);
  try {
    const carried = await options.before(
      harness.process,
      await LiveUpdateDevice.open(harness.process),
    );
    const process = await harness.liveUpdate();
    return await options.after(process, await LiveUpdateDevice.open(process), carried);
  } finally {
    await harness.shutdown();
  }
}
