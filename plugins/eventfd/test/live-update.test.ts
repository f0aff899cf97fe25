import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { EFD_NONBLOCK, EFD_SEMAPHORE, F_GETFL, O_NONBLOCK, O_RDWR } from '@liveupdate/machine';
import { twoStage } from '@liveupdate/testkit';
import { until } from '@liveupdate/vitest-config/wait-until';
import {
  EVENTFD_MODULE,
  add,
  boot,
  errnoOf,
  preserveIn,
  retrieveEventfd,
  take,
} from './helpers.js';

describe('an eventfd across live updates', () => {
  it('keeps its counter across one live update', async () => {
    const count = await twoStage({
      modules: [EVENTFD_MODULE],
      moduleBase: import.meta.url,
      async before(process, device) {
        const fd = await process.eventfd(0);
        await add(process, fd, 0x1_2345_6789_abcdn);
        const session = await device.createSession('irq');
        await session.preserveFd(fd, 1n);
      },
      async after(process, device) {
        const session = await device.retrieveSession('irq');
        const fd = await session.retrieveFd(1n);
        await session.finish();
        return take(process, fd);
      },
    });
    expect(count).toBe(0x1_2345_6789_abcdn);
  });

  it('keeps semaphore mode: each read after the update takes 1', async () => {
    const harness = await boot();
    const fd = await harness.process.eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
    await preserveIn(await LiveUpdateDevice.open(harness.process), 'jobs', fd);

    const next = await harness.liveUpdate();
    const restored = await retrieveEventfd(await LiveUpdateDevice.open(next), 'jobs');
    expect([await take(next, restored), await take(next, restored)]).toEqual([1n, 1n]);
    await add(next, restored, 2n);
    expect([await take(next, restored), await take(next, restored)]).toEqual([1n, 1n]);
    expect(await take(next, restored)).toBe(1n);
    expect(await errnoOf(take(next, restored))).toBe('EAGAIN');
  });

  it('keeps non-blocking and blocking mode as open flags of the new file', async () => {
    const harness = await boot();
    const device = await LiveUpdateDevice.open(harness.process);
    const session = await device.createSession('modes');
    await session.preserveFd(await harness.process.eventfd(0, EFD_NONBLOCK), 1n);
    await session.preserveFd(await harness.process.eventfd(0), 2n);

    const next = await harness.liveUpdate();
    const incoming = await (await LiveUpdateDevice.open(next)).retrieveSession('modes');
    const nonblocking = await incoming.retrieveFd(1n);
    const blocking = await incoming.retrieveFd(2n);
    await incoming.finish();
    expect(await next.fcntl(nonblocking, F_GETFL)).toBe(O_RDWR | O_NONBLOCK);
    expect(await next.fcntl(blocking, F_GETFL)).toBe(O_RDWR);
    expect(await errnoOf(take(next, nonblocking))).toBe('EAGAIN');
  });

  it('carries what was written and read after PRESERVE_FD: freeze records the counter', async () => {
    const harness = await boot();
    const fd = await harness.process.eventfd(10, EFD_NONBLOCK);
    await preserveIn(await LiveUpdateDevice.open(harness.process), 'irq', fd);
    // The workload goes on while the live update is prepared.
    expect(await take(harness.process, fd)).toBe(10n);
    await add(harness.process, fd, 32n);
    await add(harness.process, fd, 10n);

    const next = await harness.liveUpdate();
    const restored = await retrieveEventfd(await LiveUpdateDevice.open(next), 'irq');
    expect(await take(next, restored)).toBe(42n);
  });

  it('wakes a reader blocked on the retrieved eventfd when it is written', async () => {
    const harness = await boot();
    await preserveIn(
      await LiveUpdateDevice.open(harness.process),
      'doorbell',
      await harness.process.eventfd(0),
    );

    const next = await harness.liveUpdate();
    const restored = await retrieveEventfd(await LiveUpdateDevice.open(next), 'doorbell');
    let woken: bigint | undefined;
    const reading = take(next, restored).then((value) => (woken = value));
    // A later call of the process returns while the read waits on the zero counter.
    expect(await next.fcntl(restored, F_GETFL)).toBe(O_RDWR);
    expect(woken).toBeUndefined();

    await add(next, restored, 5n);
    await until(() => woken !== undefined, 'the blocked read to be woken by the write');
    await reading;
    expect(woken).toBe(5n);
    // It took the whole counter, as a non-semaphore read does.
    await add(next, restored, 1n);
    expect(await take(next, restored)).toBe(1n);
  });

  it('keeps an eventfd going through three live updates, each kernel signalling it', async () => {
    const harness = await boot();
    let process = harness.process;
    let fd = await process.eventfd(1, EFD_NONBLOCK);
    await preserveIn(await LiveUpdateDevice.open(process), 'irq-0', fd);
    for (let update = 1; update <= 3; update++) {
      process = await harness.liveUpdate();
      const device = await LiveUpdateDevice.open(process);
      fd = await retrieveEventfd(device, `irq-${update - 1}`);
      await add(process, fd, 10n ** BigInt(update));
      // A retrieved eventfd is preserved again in a new outgoing session, after the finish.
      if (update < 3) await preserveIn(device, `irq-${update}`, fd);
    }
    expect(await take(process, fd)).toBe(1111n);
  });

  it('lets an outgoing session go before the reboot: the eventfd stays usable and preservable', async () => {
    const harness = await boot();
    const fd = await harness.process.eventfd(1, EFD_NONBLOCK);
    const device = await LiveUpdateDevice.open(harness.process);
    const session = await preserveIn(device, 'first', fd);
    await session.close(); // unpreserve
    await add(harness.process, fd, 1n);
    await preserveIn(device, 'second', fd);

    const next = await harness.liveUpdate();
    const incoming = await LiveUpdateDevice.open(next);
    expect(await errnoOf(incoming.retrieveSession('first'))).toBe('ENOENT');
    expect(await take(next, await retrieveEventfd(incoming, 'second'))).toBe(2n);
  });
});
