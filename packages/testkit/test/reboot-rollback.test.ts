// liveupdate_reboot() when a freeze fails (spec/luo-upstream.md §4.2): exactly what was frozen is
// unfrozen, the reboot returns the handler's errno, and everything stays usable for a retry.
import { expect, it } from 'vitest';
import type { LiveUpdateSession } from '@liveupdate/core';
import { statsDifferences, testkitStats } from '@liveupdate/testkit';
import { boot, noteCalls, noteControl, openDevice, preserveNote, readNote } from './helpers.js';

it('rolls back a freeze that fails in the second of three sessions, and a retry carries everything over', async () => {
  const harness = await boot();
  const device = await openDevice(harness.process);
  const sessions: Record<string, LiveUpdateSession> = {};
  const layout = { A: ['a1', 'a2'], B: ['b1', 'b2', 'b3'], C: ['c1'] };
  for (const [name, texts] of Object.entries(layout)) {
    sessions[name] = await device.createSession(name);
    for (const [token, text] of texts.entries()) await preserveNote(sessions[name], token, text);
  }
  await noteControl(harness.process, { failFreeze: 'b2' });

  await expect(harness.liveUpdate()).rejects.toMatchObject({ code: 'EAGAIN' });
  expect(await noteCalls(harness.process)).toEqual([
    'freeze a1',
    'freeze a2',
    'freeze b1',
    'freeze b2',
    // The failing session's frozen files, then the earlier sessions in reverse, files forwards.
    'unfreeze b1',
    'unfreeze a1',
    'unfreeze a2',
  ]);

  // Still the old kernel, with the same process and every session usable.
  expect(harness.machine.bootCount).toBe(1);
  expect(harness.machine.kernelVersion).toBe('6.18.0');
  expect(harness.process.alive).toBe(true);
  for (const [name, session] of Object.entries(sessions)) {
    await expect(session.getName()).resolves.toBe(name);
    await preserveNote(session, 9, `${name.toLowerCase()}9`);
  }

  await noteControl(harness.process, { failFreeze: null });
  const next = await harness.liveUpdate();
  expect(harness.machine.kernelVersion).toBe('6.18.1');
  const incoming = await openDevice(next);
  const arrived: Record<string, string[]> = {};
  for (const [name, texts] of Object.entries(layout)) {
    const session = await incoming.retrieveSession(name);
    arrived[name] = [];
    for (const token of [...texts.keys(), 9]) {
      arrived[name].push(await readNote(next, await session.retrieveFd(token)));
    }
  }
  expect(arrived).toEqual({
    A: ['a1', 'a2', 'a9'],
    B: ['b1', 'b2', 'b3', 'b9'],
    C: ['c1', 'c9'],
  });
});

it('refuses a reboot where two files hand over the same serializedData: EINVAL, nothing written, both unfrozen', async () => {
  const harness = await boot();
  const device = await openDevice(harness.process);
  const first = await device.createSession('first');
  const second = await device.createSession('second');
  await preserveNote(first, 1, 'a');
  await preserveNote(second, 1, 'b');
  const before = await testkitStats(harness.process);
  await noteControl(harness.process, { freezeDataAs: 'a' });

  const failure = await harness.liveUpdate().catch((error: unknown) => error);
  expect(failure).toMatchObject({ code: 'EINVAL' });
  expect(String(failure)).toMatch(
    /note-v1: session "second" token 1 has the serializedData 0x[0-9a-f]+ of session "first" token 1/,
  );
  expect(await noteCalls(harness.process)).toEqual([
    'freeze a',
    'freeze b',
    'unfreeze b',
    'unfreeze a',
  ]);
  // Nothing of the handover stays preserved, and the old kernel runs on.
  const after = await testkitStats(harness.process);
  expect(statsDifferences(before, after)).toEqual([]);
  expect(harness.machine.bootCount).toBe(1);

  await noteControl(harness.process, { freezeDataAs: null });
  const next = await harness.liveUpdate();
  const incoming = await openDevice(next);
  const texts = [];
  for (const name of ['first', 'second']) {
    const session = await incoming.retrieveSession(name);
    texts.push(await readNote(next, await session.retrieveFd(1)));
  }
  expect(texts).toEqual(['a', 'b']);
});
