// The file type on its own, without a live update. Its errnos are in handler-cases.test.ts.
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { RINGBUF_OVERWRITE, ringbufCreate, ringbufStats } from '@liveupdate/example-ringbuf';
import { KiB, append, boot, consume, drain, errnoOf, record } from './helpers.js';

describe('a ring buffer', () => {
  it('counts what it holds in RINGBUF_IOC_STATS', async () => {
    const { process } = await boot();
    const fd = await ringbufCreate(process, 8 * KiB, RINGBUF_OVERWRITE);
    await append(process, fd, [record(1), record(2, 20)]);
    expect(await ringbufStats(process, fd)).toEqual({
      flags: RINGBUF_OVERWRITE,
      capacity: 8 * KiB,
      used: 24 + 32, // an 8-byte header, then 9 and 20 bytes, each record padded to 8
      records: 2,
      dropped: 0,
      head: 56,
      tail: 0,
      liveUpdates: 0,
    });
    await consume(process, fd, 1);
    expect(await ringbufStats(process, fd)).toMatchObject({ used: 32, records: 1, tail: 24 });
  });

  it('takes one record per write and gives one per read, whole and in order', async () => {
    const { process } = await boot();
    const fd = await ringbufCreate(process, 4 * KiB);
    expect(await process.write(fd, new Uint8Array(0))).toBe(0); // no record
    await append(process, fd, [record(1, 50), record(2)]);
    // A buffer too short for the next record: EINVAL, and the record stays unread.
    expect(await errnoOf(process.read(fd, 49))).toBe('EINVAL');
    expect(await drain(process, fd)).toEqual([record(1, 50), record(2)]);
  });

  it('drops the oldest records in overwrite mode, and refuses the write otherwise', async () => {
    const { process } = await boot();
    const big = (n: number) => record(n, 1000);
    const overwrite = await ringbufCreate(process, 4 * KiB, RINGBUF_OVERWRITE);
    await append(process, overwrite, [1, 2, 3, 4, 5].map(big));
    expect((await ringbufStats(process, overwrite)).dropped).toBe(1);
    expect(await drain(process, overwrite)).toEqual([2, 3, 4, 5].map(big));
    const plain = await ringbufCreate(process, 4 * KiB);
    await append(process, plain, [1, 2, 3, 4].map(big));
    expect(await errnoOf(append(process, plain, [big(5)]))).toBe('EAGAIN');
    expect(await drain(process, plain)).toEqual([1, 2, 3, 4].map(big));
  });

  it('works without LUO, and then simply cannot be preserved', async () => {
    const { process, machine } = await boot({ cmdline: 'liveupdate=off' });
    const fd = await ringbufCreate(process, 4 * KiB);
    await append(process, fd, [record(1)]);
    expect(await drain(process, fd)).toEqual([record(1)]);
    expect(await errnoOf(LiveUpdateDevice.open(process))).toBe('ENOENT');
    expect(machine.dmesg()).toContain('ringbuf: live update is not available');
  });
});
