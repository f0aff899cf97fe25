// What an eventfd's preservation costs and gives back: one page, from PRESERVE_FD until the
// incoming session's FINISH, and nothing left over once the retrieved eventfd is closed.
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { EFD_NONBLOCK } from '@liveupdate/machine';
import { statsDifferences, testkitStats } from '@liveupdate/testkit';
import { boot, errnoOf, preserveIn, take } from './helpers.js';

/** A machine whose first kernel preserved an eventfd holding 3 in session "irq". */
async function preservedEventfd() {
  const harness = await boot();
  await preserveIn(
    await LiveUpdateDevice.open(harness.process),
    'irq',
    await harness.process.eventfd(3, EFD_NONBLOCK),
  );
  return harness;
}

describe("an eventfd's preserved page", () => {
  it('is one preserved page from PRESERVE_FD on, and nothing once the session is closed', async () => {
    const harness = await boot();
    const before = await testkitStats(harness.process);
    const fd = await harness.process.eventfd(3, EFD_NONBLOCK);
    const device = await LiveUpdateDevice.open(harness.process);
    const session = await device.createSession('irq');
    const created = await testkitStats(harness.process);
    await session.preserveFd(fd, 1n);
    expect(statsDifferences(created, await testkitStats(harness.process))).toEqual([
      `frames allocated: ${created.framesAllocated} → ${created.framesAllocated + 1}`,
      `KHO preserved folios: ${created.khoPreservedFolios} → ${created.khoPreservedFolios + 1}`,
      `KHO preserved frames: ${created.khoPreservedFrames} → ${created.khoPreservedFrames + 1}`,
    ]);
    await session.close();
    await device.close();
    await harness.process.close(fd);
    expect(statsDifferences(before, await testkitStats(harness.process))).toEqual([]);
  });

  it('is freed at FINISH when the eventfd was never retrieved, and not before', async () => {
    const harness = await preservedEventfd();
    const next = await harness.liveUpdate();
    const session = await (await LiveUpdateDevice.open(next)).retrieveSession('irq');
    const before = await testkitStats(next);
    expect(before).toMatchObject({ khoUnrestoredFolios: 1, khoUnrestoredFrames: 1 });
    await session.finish();
    const after = await testkitStats(next);
    // Freed by the handler, not left to KHO as unclaimed.
    expect(after).toMatchObject({ khoUnrestoredFolios: 0, khoUnclaimedFolios: 0 });
    expect(after.framesFree).toBe(before.framesFree + 1);
    expect(after.framesAllocated).toBe(before.framesAllocated);
    expect(await errnoOf(session.retrieveFd(1n))).toBe('ENOENT');
  });

  it('is freed by retrieve: a retrieved, finished and closed eventfd leaves nothing behind', async () => {
    const harness = await preservedEventfd();
    const next = await harness.liveUpdate();
    const session = await (await LiveUpdateDevice.open(next)).retrieveSession('irq');
    const before = await testkitStats(next);
    const fd = await session.retrieveFd(1n);
    expect(await take(next, fd)).toBe(3n);
    await session.finish();
    await next.close(fd);
    const after = await testkitStats(next);
    expect(statsDifferences(before, after)).toEqual([
      'KHO unrestored folios: 1 → 0',
      'KHO unrestored frames: 1 → 0',
    ]);
    expect(after.framesFree).toBe(before.framesFree + 1);
  });
});
