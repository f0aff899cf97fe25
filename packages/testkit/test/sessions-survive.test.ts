// What a live update carries over: sessions (empty ones too), many of them, many files, and the
// live update number, counted across kernels.
import { expect, it } from 'vitest';
import type { LiveUpdateSession } from '@liveupdate/core';
import { twoStage } from '@liveupdate/testkit';
import {
  NOTE_MODULE,
  TEST_RAM,
  boot,
  inBatches,
  openDevice,
  preserveNote,
  readLuoFdt,
  readNote,
} from './helpers.js';

it('carries several sessions over, empty ones included', async () => {
  const result = await twoStage({
    modules: [NOTE_MODULE],
    ramBytes: TEST_RAM,
    async before(_process, device) {
      await device.createSession('empty-1');
      const full = await device.createSession('full');
      await preserveNote(full, 1, 'one');
      await preserveNote(full, 2, 'two');
      await device.createSession('empty-2');
    },
    async after(process, device) {
      const names: string[] = [];
      for (const name of ['empty-1', 'full', 'empty-2']) {
        const session = await device.retrieveSession(name);
        names.push(await session.getName());
        if (name === 'full') {
          const texts = [await readNote(process, await session.retrieveFd(1n))];
          texts.push(await readNote(process, await session.retrieveFd(2n)));
          names.push(...texts);
        }
        await session.finish();
      }
      return names;
    },
  });
  expect(result).toEqual(['empty-1', 'full', 'one', 'two', 'empty-2']);
});

it('carries 2,000 sessions of one note each', async () => {
  const names = Array.from({ length: 2000 }, (_, i) => `session-${i}`);
  const harness = await boot();
  // A process holds at most 1024 fds, so three processes hold the sessions over the kexec.
  const perHolder = 800;
  for (let first = 0; first < names.length; first += perHolder) {
    const holder = first === 0 ? harness.process : harness.machine.spawn();
    const device = await openDevice(holder);
    await inBatches(names.slice(first, first + perHolder), 50, async (name) => {
      await preserveNote(await device.createSession(name), 1, `note of ${name}`);
    });
    await device.close();
  }

  const next = await harness.liveUpdate();
  const device = await openDevice(next);
  expect(harness.machine.dmesg()).toMatch(/LUO: deserialized 2000 incoming sessions/);
  const texts = new Map<string, string>();
  await inBatches(names, 50, async (name) => {
    const session = await device.retrieveSession(name);
    const fd = await session.retrieveFd(1n);
    texts.set(name, await readNote(next, fd));
    await next.close(fd);
    await session.close();
  });
  expect(texts.size).toBe(2000);
  for (const name of names) expect(texts.get(name)).toBe(`note of ${name}`);
});

it('carries one session of 500 notes', async () => {
  const texts = await twoStage({
    modules: [NOTE_MODULE],
    ramBytes: TEST_RAM,
    async before(_process, device) {
      const session = await device.createSession('many');
      for (let token = 0; token < 500; token++) await preserveNote(session, token, `note ${token}`);
    },
    async after(process, device) {
      const session = await device.retrieveSession('many');
      const found: string[] = [];
      // Any order works; go backwards.
      for (let token = 499; token >= 0; token--) {
        found.push(await readNote(process, await session.retrieveFd(token)));
      }
      await session.finish();
      return found.reverse();
    },
  });
  expect(texts).toEqual(Array.from({ length: 500 }, (_, token) => `note ${token}`));
});

it('counts live updates 1, 2, 3 across three live updates, and carries data each time', async () => {
  const numbers: bigint[] = [];
  const harness = await boot({
    onHandover: ({ memory, khoFdtPhys }) => {
      numbers.push(readLuoFdt(memory, khoFdtPhys!).liveupdateNumber);
    },
  });
  let process = harness.process;
  let previous: LiveUpdateSession | undefined;
  for (let generation = 1; generation <= 3; generation++) {
    const device = await openDevice(process);
    if (generation > 1) {
      previous = await device.retrieveSession(`gen-${generation - 1}`);
      expect(await readNote(process, await previous.retrieveFd(1n))).toBe(`${generation - 1}`);
      await previous.finish();
    }
    await preserveNote(await device.createSession(`gen-${generation}`), 1, `${generation}`);
    process = await harness.liveUpdate();
  }
  expect(numbers).toEqual([1n, 2n, 3n]);
  for (const boot of [0, 1, 2]) {
    expect(harness.machine.dmesg(boot)).toMatch(
      new RegExp(`LUO: enabled, live update number ${boot + 1}\\b`),
    );
    expect(harness.machine.dmesg(boot)).toMatch(
      new RegExp(`LUO: serialized 1 sessions, 1 files, live update number ${boot + 1}\\b`),
    );
  }
  expect(harness.machine.dmesg(3)).toMatch(/LUO: enabled, live update number 4, incoming/);
  const last = await (await openDevice(process)).retrieveSession('gen-3');
  expect(await readNote(process, await last.retrieveFd(1n))).toBe('3');
});
