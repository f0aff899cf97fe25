// What the ringbuf-v1 retrieve does with preserved data it cannot trust: the test patches the
// buffer's ringbuf_luo_ser in RAM between the two kernels, through the harness's onHandover.
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import type { HandoverEvent, PhysicalMemory } from '@liveupdate/machine';
import { findLuoFile, sealLuoHandover, testkitStats } from '@liveupdate/testkit';
import { ringbufCreate } from '@liveupdate/example-ringbuf';
import {
  KiB,
  MiB,
  POISON,
  append,
  boot,
  dataPhys,
  errnoOf,
  patchRingbufLuoSer,
  preserveIn,
  record,
} from './helpers.js';

/**
 * A 4 KiB buffer holding one 100-byte record, preserved in session "telemetry" in the first
 * kernel; `damage` patches its `ringbuf_luo_ser` between the kernels. Resolves in the second
 * kernel with the retrieved session and the buffer's physical address.
 */
async function damagedHandover(damage: (memory: PhysicalMemory, ser: number) => void) {
  const harness = await boot({
    onHandover: ({ memory, khoFdtPhys }: HandoverEvent) => {
      // The file's serializedData is the address of its ringbuf_luo_ser.
      damage(memory, Number(findLuoFile(memory, khoFdtPhys!, 'telemetry', 1n).data));
      // LUO's checksums would refuse the damage first: reseal them, so the handler is tested.
      sealLuoHandover(memory, khoFdtPhys!);
    },
  });
  const fd = await ringbufCreate(harness.process, 4 * KiB);
  await append(harness.process, fd, [record(1, 100)]);
  const data = await dataPhys(harness.process, fd);
  await preserveIn(await LiveUpdateDevice.open(harness.process), 'telemetry', fd);
  const next = await harness.liveUpdate();
  const session = await (await LiveUpdateDevice.open(next)).retrieveSession('telemetry');
  return { harness, next, session, data };
}

describe('the ringbuf-v1 handler, given damaged or unknown data after the kexec', () => {
  it('refuses flags it does not know with EOPNOTSUPP, for good, and frees the buffer', async () => {
    const { harness, next, session, data } = await damagedHandover((memory, ser) =>
      patchRingbufLuoSer(memory, ser, { flags: 0x80 }),
    );
    expect(await errnoOf(session.retrieveFd(1n))).toBe('EOPNOTSUPP');
    expect(await errnoOf(session.retrieveFd(1n))).toBe('EOPNOTSUPP'); // sticky
    // The layout was sound: the records' folio went back to the allocator (poisoned), the header
    // page too, and nothing preserved is left over.
    expect(harness.machine.memory.read(data, 16).every((b) => b === POISON)).toBe(true);
    expect((await testkitStats(next)).khoUnrestoredFolios).toBe(0);
    await session.finish();
  });

  it('refuses positions no ringbuf-v1 writer produces with EINVAL, touching nothing', async () => {
    const { harness, next, session, data } = await damagedHandover((memory, ser) =>
      patchRingbufLuoSer(memory, ser, { tail: 4096n }),
    );
    expect(await errnoOf(session.retrieveFd(1n))).toBe('EINVAL');
    // A damaged header may point anywhere: the folio it names is left alone, reserved.
    expect(harness.machine.memory.readU32(data)).toBe(100);
    expect(await testkitStats(next)).toMatchObject({ khoUnrestoredFolios: 1 });
    await session.finish();
  });

  it('refuses a data address that is not the preserved folio with EIO', async () => {
    const { session } = await damagedHandover((memory, ser) =>
      patchRingbufLuoSer(memory, ser, { data: BigInt(60 * MiB) }),
    );
    expect(await errnoOf(session.retrieveFd(1n))).toBe('EIO');
  });
});
