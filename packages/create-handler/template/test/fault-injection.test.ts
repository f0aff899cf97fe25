// What LUO does when this handler's op fails, made to happen with the testkit's fault injection
// (the op itself is not called): a failed freeze aborts the reboot, the old kernel runs on with
// every file as it was, and a later live update goes through.
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { clearFault, errnoOf, faultStatus, injectFault } from '@liveupdate/testkit';
import { VALUE_LUO_COMPATIBLE } from '../src/index.js';
import { appendValue, boot, openValue, readValueContent } from './helpers.js';

describe('__NAME__-v1 under injected faults', () => {
  it('a freeze that fails aborts the live update, and the next one carries both files', async () => {
    const harness = await boot({ cmdline: 'liveupdate.fault_injection=on' });
    const { process } = harness;
    const session = await (await LiveUpdateDevice.open(process)).createSession('values');
    const first = await openValue(process, 'first');
    const second = await openValue(process, 'second');
    await session.preserveFd(first, 1n);
    await session.preserveFd(second, 2n);

    await injectFault(process, {
      compatible: VALUE_LUO_COMPATIBLE,
      op: 'freeze',
      nth: 2,
      errno: 'EIO',
    });
    expect(await errnoOf(harness.liveUpdate())).toBe('EIO');
    expect((await faultStatus(process)).fired).toBe(true);
    // The old kernel runs on: the files still work, and what they get now crosses later.
    await appendValue(process, first, ' and more');
    await clearFault(process);

    const next = await harness.liveUpdate();
    const incoming = await (await LiveUpdateDevice.open(next)).retrieveSession('values');
    const fds = [await incoming.retrieveFd(1n), await incoming.retrieveFd(2n)];
    await incoming.finish();
    const values = await Promise.all(
      fds.map(async (fd) => (await readValueContent(next, fd)).value),
    );
    expect(values).toEqual(['first and more', 'second']);
  });

  it('a preserve that fails leaves the file unpreserved and preservable again', async () => {
    const harness = await boot({ cmdline: 'liveupdate.fault_injection=on' });
    const { process } = harness;
    const session = await (await LiveUpdateDevice.open(process)).createSession('values');
    const fd = await openValue(process, 'kept');
    await injectFault(process, {
      compatible: VALUE_LUO_COMPATIBLE,
      op: 'preserve',
      errno: 'ENOMEM',
    });
    expect(await errnoOf(session.preserveFd(fd, 1n))).toBe('ENOMEM');
    await clearFault(process);
    await session.preserveFd(fd, 1n);

    const next = await harness.liveUpdate();
    const incoming = await (await LiveUpdateDevice.open(next)).retrieveSession('values');
    const retrieved = await incoming.retrieveFd(1n);
    await incoming.finish();
    expect((await readValueContent(next, retrieved)).value).toBe('kept');
  });
});
