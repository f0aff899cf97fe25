// The module's rehearsal: an image made with `rehearse: true` runs it when loaded (a live update
// of one file between two private kernels, on private RAM), and nothing of it reaches the machine.
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { errnoOf } from '@liveupdate/testkit';
import { VALUE_REHEARSAL_SESSION } from '../src/index.js';
import { boot, openValue, readValueContent } from './helpers.js';

const REHEARSED =
  /rehearsal: a live update rehearsed on private memory at load in \d+\.\d ms \(__NAME__\)/;

describe("the module's rehearsal", () => {
  it('runs when each image is loaded, and the real live update then carries a value', async () => {
    const harness = await boot({ rehearse: true });
    expect(harness.machine.dmesg()).toMatch(REHEARSED);
    const { process } = harness;
    const session = await (await LiveUpdateDevice.open(process)).createSession('values');
    await session.preserveFd(await openValue(process, 'kept'), 1n);

    const next = await harness.liveUpdate();
    expect(harness.machine.dmesg()).toMatch(REHEARSED);
    const device = await LiveUpdateDevice.open(next);
    // The rehearsal's own session never reaches the machine's kernels.
    expect(await errnoOf(device.retrieveSession(VALUE_REHEARSAL_SESSION))).toBe('ENOENT');
    const incoming = await device.retrieveSession('values');
    const fd = await incoming.retrieveFd(1n);
    await incoming.finish();
    expect((await readValueContent(next, fd)).value).toBe('kept');
  });
});
