// What the eventfd-v1 retrieve does with preserved data it cannot trust: the test patches the
// eventfd's eventfd_luo_ser (or its luo_file_ser) in RAM between the two kernels, through the
// harness's onHandover, and reseals LUO's checksums so that the handler's own checks are tested.
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice, luoFileSer } from '@liveupdate/core';
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  F_GETFL,
  O_NONBLOCK,
  O_RDWR,
  type HandoverEvent,
  type PhysicalMemory,
} from '@liveupdate/machine';
import { rawLuoHandover, sealLuoHandover, testkitStats } from '@liveupdate/testkit';
import {
  add,
  boot,
  errnoOf,
  findEventfdLuoSer,
  patchEventfdLuoSer,
  preserveIn,
  take,
} from './helpers.js';

/**
 * An eventfd holding 7 (non-blocking), preserved in session "irq" in the first kernel; `damage`
 * patches the handover between the kernels. Resolves in the second kernel with the retrieved
 * session.
 */
async function damagedHandover(damage: (memory: PhysicalMemory, khoFdtPhys: number) => void) {
  const harness = await boot({
    onHandover: ({ memory, khoFdtPhys }: HandoverEvent) => {
      damage(memory, khoFdtPhys!);
      sealLuoHandover(memory, khoFdtPhys!);
    },
  });
  const fd = await harness.process.eventfd(7, EFD_NONBLOCK);
  await preserveIn(await LiveUpdateDevice.open(harness.process), 'irq', fd);
  const next = await harness.liveUpdate();
  const session = await (await LiveUpdateDevice.open(next)).retrieveSession('irq');
  return { harness, next, session };
}

/** Patch the `eventfd_luo_ser` of token 1. */
const patchSer =
  (patch: Parameters<typeof patchEventfdLuoSer>[2]) =>
  (memory: PhysicalMemory, khoFdtPhys: number) =>
    patchEventfdLuoSer(memory, findEventfdLuoSer(memory, khoFdtPhys), patch);

describe('the eventfd-v1 handler, given damaged or unknown data after the kexec', () => {
  it('refuses flags no eventfd-v1 writer sets with EINVAL, for good, and logs them', async () => {
    const { harness, next, session } = await damagedHandover(
      patchSer({ flags: EFD_NONBLOCK | 0x2 }),
    );
    expect(await errnoOf(session.retrieveFd(1n))).toBe('EINVAL');
    expect(await errnoOf(session.retrieveFd(1n))).toBe('EINVAL'); // sticky
    expect(harness.machine.dmesg()).toMatch(
      /eventfd: session irq: eventfd_luo_ser at 0x[0-9a-f]+: flags 0x802 has bits no eventfd-v1 writer sets \(0x2\)/,
    );
    // Refused before anything was restored: the page stays reserved until the session is
    // finished, and then KHO frees it as unclaimed.
    expect(await testkitStats(next)).toMatchObject({ khoUnrestoredFolios: 1 });
    await session.finish();
    expect(await testkitStats(next)).toMatchObject({
      khoUnrestoredFolios: 0,
      khoUnclaimedFolios: 1,
    });
  });

  it('refuses a reserved field that is not 0 with EINVAL, and logs it', async () => {
    const { harness, session } = await damagedHandover(patchSer({ reserved: 1 }));
    expect(await errnoOf(session.retrieveFd(1n))).toBe('EINVAL');
    expect(harness.machine.dmesg()).toMatch(
      /eventfd: session irq: eventfd_luo_ser at 0x[0-9a-f]+: reserved is 0x1, not 0/,
    );
  });

  it('fails both files of a handover that names one eventfd_luo_ser twice, giving neither counter', async () => {
    const harness = await boot({
      onHandover: ({ memory, khoFdtPhys }: HandoverEvent) => {
        const [first, second] = rawLuoHandover(memory, khoFdtPhys!).sessions[0]!.files;
        memory.writeU64(second!.phys + luoFileSer.offsets.data, first!.entry.data);
        sealLuoHandover(memory, khoFdtPhys!);
      },
    });
    const session = await (await LiveUpdateDevice.open(harness.process)).createSession('irq');
    await session.preserveFd(await harness.process.eventfd(7, EFD_NONBLOCK), 1n);
    await session.preserveFd(await harness.process.eventfd(9, EFD_NONBLOCK), 2n);
    const next = await harness.liveUpdate();
    const incoming = await (await LiveUpdateDevice.open(next)).retrieveSession('irq');
    expect(await errnoOf(incoming.retrieveFd(2n))).toBe('EIO');
    expect(await errnoOf(incoming.retrieveFd(1n))).toBe('EIO');
  });

  it('refuses a luo_file_ser.data naming no preserved page with EINVAL, and logs it', async () => {
    const { harness, session } = await damagedHandover((memory, khoFdtPhys) => {
      const file = rawLuoHandover(memory, khoFdtPhys).sessions[0]!.files[0]!;
      memory.writeU64(file.phys + luoFileSer.offsets.data, 0x10_0000n);
    });
    expect(await errnoOf(session.retrieveFd(1n))).toBe('EINVAL');
    expect(harness.machine.dmesg()).toContain(
      'eventfd: session irq: 0x100000 is not a preserved eventfd_luo_ser page',
    );
  });

  it("takes EFD_CLOEXEC, which upstream's writer sets, and leaves it to the fd", async () => {
    const { next, session } = await damagedHandover(
      patchSer({ flags: EFD_NONBLOCK | EFD_CLOEXEC }),
    );
    const fd = await session.retrieveFd(1n);
    expect(await next.fcntl(fd, F_GETFL)).toBe(O_RDWR | O_NONBLOCK);
    expect(await take(next, fd)).toBe(7n);
  });

  it('takes the counter a kernel signal saturates at, 2^64 - 1, which no write reaches', async () => {
    const { next, session } = await damagedHandover(patchSer({ count: 0xffff_ffff_ffff_ffffn }));
    const fd = await session.retrieveFd(1n);
    // Full: even a write of 1 would have to wait.
    expect(await errnoOf(add(next, fd, 1n))).toBe('EAGAIN');
    expect(await take(next, fd)).toBe(0xffff_ffff_ffff_ffffn);
  });
});
