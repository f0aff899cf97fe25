import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { PAGE_SIZE } from '@liveupdate/machine';
import { testkitStats, twoStage } from '@liveupdate/testkit';
import {
  RINGBUF_OVERWRITE,
  ringbufCreate,
  ringbufStats,
  type RingbufStats,
} from '@liveupdate/example-ringbuf';
import {
  KiB,
  RINGBUF_MODULE,
  append,
  boot,
  consume,
  dataPhys,
  drain,
  errnoOf,
  preserveIn,
  record,
  retrieveRing,
} from './helpers.js';

describe('a ring buffer across live updates', () => {
  it('keeps its unread records, in order, across one live update', async () => {
    const records = await twoStage({
      modules: [RINGBUF_MODULE],
      moduleBase: import.meta.url,
      async before(process, device) {
        const fd = await ringbufCreate(process, 16 * KiB);
        await append(
          process,
          fd,
          [1, 2, 3, 4, 5].map((n) => record(n)),
        );
        expect(await consume(process, fd, 2)).toEqual([record(1), record(2)]);
        const session = await device.createSession('telemetry');
        await session.preserveFd(fd, 1n);
      },
      async after(process, device) {
        const session = await device.retrieveSession('telemetry');
        const fd = await session.retrieveFd(1n);
        await session.finish();
        return drain(process, fd);
      },
    });
    expect(records).toEqual([record(3), record(4), record(5)]);
  });

  it('carries what was appended and consumed after preserve: freeze records the positions', async () => {
    const harness = await boot();
    const fd = await ringbufCreate(harness.process, 16 * KiB);
    await append(harness.process, fd, [record(1), record(2)]);
    await preserveIn(await LiveUpdateDevice.open(harness.process), 'telemetry', fd);
    // The workload goes on while the live update is prepared.
    await append(harness.process, fd, [record(3), record(4)]);
    expect(await consume(harness.process, fd, 1)).toEqual([record(1)]);
    const before = await ringbufStats(harness.process, fd);

    const next = await harness.liveUpdate();
    const restored = await retrieveRing(await LiveUpdateDevice.open(next), 'telemetry');
    const after = await ringbufStats(next, restored);
    expect(after).toEqual({ ...before, liveUpdates: 1 });
    expect(await drain(next, restored)).toEqual([record(2), record(3), record(4)]);
  });

  it('keeps a buffer going through three live updates, each kernel reading and appending', async () => {
    const harness = await boot();
    let process = harness.process;
    let fd = await ringbufCreate(process, 8 * KiB);
    await append(process, fd, [record(0), record(1)]);
    await preserveIn(await LiveUpdateDevice.open(process), 'telemetry-0', fd);
    const read: string[] = [];
    for (let update = 1; update <= 3; update++) {
      process = await harness.liveUpdate();
      const device = await LiveUpdateDevice.open(process);
      fd = await retrieveRing(device, `telemetry-${update - 1}`);
      read.push(...(await consume(process, fd, 1)));
      await append(process, fd, [record(update + 1)]);
      // A retrieved buffer is preserved again in a new outgoing session, after the finish.
      if (update < 3) await preserveIn(device, `telemetry-${update}`, fd);
    }
    expect((await ringbufStats(process, fd)).liveUpdates).toBe(3);
    expect([...read, ...(await drain(process, fd))]).toEqual([0, 1, 2, 3, 4].map((n) => record(n)));
  });

  it('keeps a buffer that wrapped around, with a record split across the end', async () => {
    const harness = await boot();
    const fd = await ringbufCreate(harness.process, 4 * KiB);
    // 1000-byte records take 1008 bytes: four fit; the fifth has to go over the end.
    const big = (n: number) => record(n, 1000);
    await append(harness.process, fd, [1, 2, 3, 4].map(big));
    expect(await consume(harness.process, fd, 2)).toEqual([big(1), big(2)]);
    await append(harness.process, fd, [big(5), big(6)]);
    const stats = await ringbufStats(harness.process, fd);
    expect(stats.head).toBeGreaterThan(stats.capacity);
    expect(stats.head % stats.capacity).toBeLessThan(stats.tail % stats.capacity);
    await preserveIn(await LiveUpdateDevice.open(harness.process), 'telemetry', fd);

    const next = await harness.liveUpdate();
    const restored = await retrieveRing(await LiveUpdateDevice.open(next), 'telemetry');
    expect(await drain(next, restored)).toEqual([3, 4, 5, 6].map(big));
    // Still a working ring after the update: it wraps again.
    await append(next, restored, [7, 8, 9, 10].map(big));
    expect(await drain(next, restored)).toEqual([7, 8, 9, 10].map(big));
  });

  it('keeps overwrite mode and its dropped count', async () => {
    const harness = await boot();
    const fd = await ringbufCreate(harness.process, 4 * KiB, RINGBUF_OVERWRITE);
    const big = (n: number) => record(n, 1000);
    await append(harness.process, fd, [1, 2, 3, 4, 5, 6].map(big));
    const before = await ringbufStats(harness.process, fd);
    expect(before).toMatchObject({ flags: RINGBUF_OVERWRITE, records: 4, dropped: 2 });
    await preserveIn(await LiveUpdateDevice.open(harness.process), 'flight-recorder', fd);

    const next = await harness.liveUpdate();
    const restored = await retrieveRing(await LiveUpdateDevice.open(next), 'flight-recorder');
    expect(await ringbufStats(next, restored)).toEqual<RingbufStats>({ ...before, liveUpdates: 1 });
    await append(next, restored, [big(7)]);
    expect(await drain(next, restored)).toEqual([4, 5, 6, 7].map(big));
    expect((await ringbufStats(next, restored)).dropped).toBe(3);
  });

  it('hands the records over on the same frames, without copying them', async () => {
    const harness = await boot();
    const fd = await ringbufCreate(harness.process, 64 * KiB);
    await append(harness.process, fd, [record(1)]);
    const phys = await dataPhys(harness.process, fd);
    await preserveIn(await LiveUpdateDevice.open(harness.process), 'telemetry', fd);

    const next = await harness.liveUpdate();
    const restored = await retrieveRing(await LiveUpdateDevice.open(next), 'telemetry');
    expect(await dataPhys(next, restored)).toBe(phys);
    const mapping = await next.mmap(restored, PAGE_SIZE);
    // The record as it lies in the buffer: an 8-byte header, then the payload.
    expect(new TextDecoder().decode(mapping.segments[0]!.bytes.subarray(8, 17))).toBe(record(1));
    await next.munmap(mapping);
  });

  it('lets an outgoing session go before the reboot: the buffer stays usable and preservable', async () => {
    const harness = await boot();
    const fd = await ringbufCreate(harness.process, 8 * KiB);
    await append(harness.process, fd, [record(1)]);
    const device = await LiveUpdateDevice.open(harness.process);
    const session = await preserveIn(device, 'first', fd);
    await session.close(); // unpreserve
    await append(harness.process, fd, [record(2)]);
    await preserveIn(device, 'second', fd);

    const next = await harness.liveUpdate();
    const incoming = await LiveUpdateDevice.open(next);
    expect(await errnoOf(incoming.retrieveSession('first'))).toBe('ENOENT');
    const restored = await retrieveRing(incoming, 'second');
    expect(await drain(next, restored)).toEqual([record(1), record(2)]);
  });

  it('is an ordinary buffer once its session is finished', async () => {
    const harness = await boot();
    const fd = await ringbufCreate(harness.process, 4 * KiB);
    await preserveIn(await LiveUpdateDevice.open(harness.process), 'telemetry', fd);
    const next = await harness.liveUpdate();
    const restored = await retrieveRing(await LiveUpdateDevice.open(next), 'telemetry');
    expect(await errnoOf(next.write(restored, new Uint8Array(4089)))).toBe('E2BIG');
    await append(next, restored, [record(1)]);
    expect(await drain(next, restored)).toEqual([record(1)]);
    const before = await testkitStats(next);
    await next.close(restored);
    // The last reference gives the buffer's frames back.
    expect((await testkitStats(next)).framesFree).toBe(before.framesFree + 1);
  });
});
