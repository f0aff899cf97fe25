import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { testkitStats } from '@liveupdate/testkit';
import { ringbufCreate } from '@liveupdate/example-ringbuf';
import { KiB, POISON, append, boot, dataPhys, errnoOf, preserveIn, record } from './helpers.js';

/** A machine whose first kernel preserved a buffer holding one 100-byte record in "telemetry". */
async function preservedBuffer() {
  const harness = await boot();
  const fd = await ringbufCreate(harness.process, 16 * KiB);
  await append(harness.process, fd, [record(1, 100)]);
  const data = await dataPhys(harness.process, fd);
  await preserveIn(await LiveUpdateDevice.open(harness.process), 'telemetry', fd);
  const memory = harness.machine.memory;
  return {
    harness,
    data,
    /** Whether the buffer's first record header still reads as it was written. */
    intact: () => memory.readU32(data) === 100,
    /** Whether the buffer's frames went back to the allocator (poisoned on free). */
    freed: () => memory.read(data, 16 * KiB).every((b) => b === POISON),
  };
}

describe('finishing a ring buffer that was never retrieved', () => {
  it('frees its frames at FINISH, and not before', async () => {
    const { harness, intact, freed } = await preservedBuffer();
    const next = await harness.liveUpdate();
    const session = await (await LiveUpdateDevice.open(next)).retrieveSession('telemetry');
    expect(intact()).toBe(true);
    // Reserved until then: the buffer's folio (4 frames) and its ringbuf_luo_ser page.
    expect(await testkitStats(next)).toMatchObject({
      khoUnrestoredFolios: 2,
      khoUnrestoredFrames: 5,
    });
    const before = await testkitStats(next);
    await session.finish();
    expect(freed()).toBe(true);
    const after = await testkitStats(next);
    expect(after).toMatchObject({ khoUnrestoredFolios: 0, khoUnrestoredFrames: 0 });
    // Back to the allocator as free frames, not kept allocated.
    expect(after.framesAllocated).toBe(before.framesAllocated);
    expect(after.framesFree).toBe(before.framesFree + 5);
    expect(await errnoOf(session.retrieveFd(1n))).toBe('ENOENT');
  });

  it('frees its frames when the retrieved session is closed (an implicit FINISH)', async () => {
    const { harness, intact, freed } = await preservedBuffer();
    const next = await harness.liveUpdate();
    const session = await (await LiveUpdateDevice.open(next)).retrieveSession('telemetry');
    expect(intact()).toBe(true);
    await session.close();
    expect(freed()).toBe(true);
  });

  it('keeps them reserved while the session is not retrieved, and drops them at the next kexec', async () => {
    const { harness, intact, freed } = await preservedBuffer();
    await harness.liveUpdate();
    // Nobody retrieves "telemetry" in this kernel: its frames stay reserved, untouched.
    expect(intact()).toBe(true);
    const third = await harness.liveUpdate();
    expect(await errnoOf((await LiveUpdateDevice.open(third)).retrieveSession('telemetry'))).toBe(
      'ENOENT',
    );
    expect(freed()).toBe(true);
  });
});
