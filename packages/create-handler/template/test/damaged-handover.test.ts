// What retrieve does with preserved data it cannot trust: the test damages this file's
// value_luo_ser in RAM between the two kernels (the harness's onHandover), then reseals LUO's
// checksums, which would otherwise refuse the damage before the handler sees it.
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import type { HandoverEvent } from '@liveupdate/machine';
import { errnoOf, rawLuoHandover, sealLuoHandover, testkitStats } from '@liveupdate/testkit';
import { valueLuoSer } from '../src/index.js';
import { boot, openValue } from './helpers.js';

type ValueLuoSer = ReturnType<typeof valueLuoSer.decode>;

/**
 * A value preserved in session "values" in the first kernel, its `value_luo_ser` patched with
 * `patch` between the kernels. Resolves in the second kernel with its process and the session.
 */
async function damagedHandover(patch: Partial<ValueLuoSer>) {
  const harness = await boot({
    onHandover: ({ memory, khoFdtPhys }: HandoverEvent) => {
      // The file's serializedData (luo_file_ser.data) is the address of its value_luo_ser.
      const file = rawLuoHandover(memory, khoFdtPhys!).sessions[0]!.files[0]!;
      const ser = memory.view(Number(file.entry.data), valueLuoSer.size);
      valueLuoSer.encodeInto(ser, 0, { ...valueLuoSer.decode(ser), ...patch });
      sealLuoHandover(memory, khoFdtPhys!);
    },
  });
  const session = await (await LiveUpdateDevice.open(harness.process)).createSession('values');
  await session.preserveFd(await openValue(harness.process, 'untrusted'), 1n);
  const next = await harness.liveUpdate();
  const incoming = await (await LiveUpdateDevice.open(next)).retrieveSession('values');
  return { next, incoming };
}

describe('__NAME__-v1 retrieve, given a damaged or unknown value_luo_ser', () => {
  it('refuses flags it does not know with EOPNOTSUPP, for good, and frees the page', async () => {
    const { next, incoming } = await damagedHandover({ flags: 0x40 });
    expect(await errnoOf(incoming.retrieveFd(1n))).toBe('EOPNOTSUPP');
    expect(await errnoOf(incoming.retrieveFd(1n))).toBe('EOPNOTSUPP'); // sticky
    expect((await testkitStats(next)).khoUnrestoredFolios).toBe(0);
    await incoming.finish();
  });

  it('refuses a length no writer produces with EINVAL, leaving the page it names alone', async () => {
    const { next, incoming } = await damagedHandover({ length: 4097n });
    expect(await errnoOf(incoming.retrieveFd(1n))).toBe('EINVAL');
    // A damaged description may point anywhere: the page stays reserved until the next reboot.
    expect((await testkitStats(next)).khoUnrestoredFolios).toBe(1);
    await incoming.finish();
  });

  it('refuses an access mode that does not exist with EINVAL', async () => {
    const { incoming } = await damagedHandover({ flags: 3 });
    expect(await errnoOf(incoming.retrieveFd(1n))).toBe('EINVAL');
  });
});
