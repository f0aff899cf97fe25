// The next kernel checks what it is handed (spec/luo-upstream.md §2.2, §12 invariant 7): a bad LUO
// root panics at boot; bad sessions or files make /dev/liveupdate EIO for good.
import { describe, expect, it } from 'vitest';
import { MachineHaltedError, type HandoverEvent, type PhysicalMemory } from '@liveupdate/machine';
import { liveUpdateImage } from '@liveupdate/testkit';
import { boot, luoFdtLocation, openDevice, preserveNote, readLuoFdt } from './helpers.js';

/** Boot with `corrupt` run on the handover, preserve one note in session "s", and live-update. */
async function liveUpdateCorrupted(corrupt: (memory: PhysicalMemory, khoFdtPhys: number) => void) {
  const harness = await boot({
    onHandover: ({ memory, khoFdtPhys }: HandoverEvent) => corrupt(memory, khoFdtPhys!),
  });
  await preserveNote(await (await openDevice(harness.process)).createSession('s'), 1, 'data');
  const outcome = await harness.liveUpdate().catch((error: unknown) => error);
  return { harness, outcome };
}

describe('the incoming LUO data', () => {
  it('makes the new kernel panic, naming LUO, when the LUO FDT is not luo-v1', async () => {
    const { harness, outcome } = await liveUpdateCorrupted((memory, khoFdtPhys) => {
      const { phys, size } = luoFdtLocation(memory, khoFdtPhys);
      const blob = memory.view(phys, size);
      const at = Buffer.from(blob).indexOf('luo-v1');
      blob[at + 5] = '9'.charCodeAt(0);
    });
    expect(MachineHaltedError.isInstance(outcome)).toBe(true);
    expect(harness.machine.state).toBe('halted');
    expect(harness.machine.panicReason).toMatch(/^LUO: .*not compatible with "luo-v1".*luo-v9/);
    expect(harness.machine.dmesg(1)).toMatch(/Kernel panic - not syncing: LUO: /);
  });

  it.each([
    ['far beyond the session limit', 1_000_000n, /count 1000000 is more than the 4096 allowed/],
    ['one past the sessions written', 2n, /luo_session_ser\[1\]: name is empty/],
  ])(
    'makes every open of /dev/liveupdate EIO when the session count is %s',
    async (_what, count, logged) => {
      const { harness, outcome } = await liveUpdateCorrupted((memory, khoFdtPhys) => {
        memory.writeU64(Number(readLuoFdt(memory, khoFdtPhys).sessionHeaderPhys), count);
      });
      expect(outcome).not.toBeInstanceOf(Error);
      await expect(openDevice(harness.process)).rejects.toMatchObject({ code: 'EIO' });
      await expect(openDevice(harness.process)).rejects.toMatchObject({ code: 'EIO' });
      expect(harness.machine.dmesg()).toMatch(/LUO: deserialization failed: /);
      expect(harness.machine.dmesg()).toMatch(logged);
    },
  );

  it('makes /dev/liveupdate EIO, logging the compatible, when no handler takes a file', async () => {
    const harness = await boot();
    await preserveNote(await (await openDevice(harness.process)).createSession('s'), 7, 'note');
    const next = await harness.liveUpdate(liveUpdateImage({ version: '6.18.1', modules: [] }));
    await expect(openDevice(next)).rejects.toMatchObject({ code: 'EIO' });
    expect(harness.machine.dmesg()).toMatch(
      /LUO: deserialization failed: session "s" token 7: no file handler registered for compatible "note-v1"/,
    );
  });
});
