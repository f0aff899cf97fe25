// Session and file lifecycles (spec/luo-upstream.md §1.6, §4.3, §4.4), seen through the calls the
// note handler records.
import { describe, expect, it } from 'vitest';
import { twoStage } from '@liveupdate/testkit';
import {
  NOTE_MODULE,
  TEST_RAM,
  boot,
  createNote,
  noteCalls,
  noteControl,
  openDevice,
  preserveNote,
  readNote,
} from './helpers.js';

describe('an outgoing session', () => {
  it('unpreserves its files in reverse order when closed, and frees its name', async () => {
    const { process } = await boot();
    const device = await openDevice(process);
    const session = await device.createSession('s');
    for (const [token, text] of ['a', 'b', 'c'].entries()) await preserveNote(session, token, text);
    await noteCalls(process);
    await session.close();
    expect(await noteCalls(process)).toEqual(['unpreserve c', 'unpreserve b', 'unpreserve a']);
    await expect(device.createSession('s')).resolves.toBeDefined();
  });

  it('still closes when unpreserve throws a plain Error, which is logged', async () => {
    const harness = await boot();
    const device = await openDevice(harness.process);
    const session = await device.createSession('s');
    await preserveNote(session, 1, 'a');
    await preserveNote(session, 2, 'b');
    await noteControl(harness.process, { throwPlain: 'unpreserve' });
    await expect(session.close()).resolves.toBeUndefined();
    expect(await noteCalls(harness.process)).toEqual(['unpreserve b', 'unpreserve a']);
    expect(harness.machine.dmesg()).toMatch(
      /LUO: note-v1: unpreserve threw Error: note: unpreserve exploded/,
    );
    await expect(device.createSession('s')).resolves.toBeDefined();
  });

  it('gets EIO from a preserve that throws a plain Error, and keeps nothing of it', async () => {
    const harness = await boot();
    const session = await (await openDevice(harness.process)).createSession('s');
    const note = await createNote(harness.process, 'retry me');
    await noteControl(harness.process, { throwPlain: 'preserve' });
    await expect(session.preserveFd(note, 1n)).rejects.toMatchObject({ code: 'EIO' });
    expect(harness.machine.dmesg()).toMatch(
      /LUO: note-v1: preserve threw Error: note: preserve exploded/,
    );
    await noteControl(harness.process, { throwPlain: null });
    // Neither the token nor the file's identity was left registered.
    await expect(session.preserveFd(note, 1n)).resolves.toBeUndefined();
    await session.close();
    // Only the successful preserve is unpreserved.
    expect(await noteCalls(harness.process)).toEqual(['preserve retry me', 'unpreserve retry me']);
  });
});

describe('an incoming session', () => {
  it('finishes when its fd is closed, then is gone', async () => {
    const harness = await boot();
    const session = await (await openDevice(harness.process)).createSession('s');
    await preserveNote(session, 1, 'a');
    await preserveNote(session, 2, 'b');
    const next = await harness.liveUpdate();
    const device = await openDevice(next);
    const incoming = await device.retrieveSession('s');
    const a = await incoming.retrieveFd(1n);
    await incoming.close();
    expect(await noteCalls(next)).toEqual([
      'retrieve a',
      'canFinish a',
      'canFinish b (no file)',
      'finish b (no file)',
      'finish a',
    ]);
    await expect(device.retrieveSession('s')).rejects.toMatchObject({ code: 'ENOENT' });
    // The retrieved file outlives the session as an ordinary file.
    expect(await readNote(next, a)).toBe('a');
  });

  it('stays, unreachable, when closing it cannot finish, until the next reboot drops it', async () => {
    const harness = await boot();
    const session = await (await openDevice(harness.process)).createSession('s');
    await preserveNote(session, 1, 'a');
    const next = await harness.liveUpdate();
    const device = await openDevice(next);
    const incoming = await device.retrieveSession('s');
    await noteControl(next, { refuseFinish: true });
    await expect(incoming.close()).resolves.toBeUndefined();
    expect(await noteCalls(next)).toEqual(['canFinish a (no file)']);
    expect(harness.machine.dmesg()).toMatch(/LUO: closing session "s" could not finish it/);
    await expect(device.retrieveSession('s')).rejects.toMatchObject({ code: 'EINVAL' });
    // A leaked incoming session is not handed over again.
    const third = await harness.liveUpdate();
    await expect((await openDevice(third)).retrieveSession('s')).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('still closes when finish throws a plain Error, which is logged', async () => {
    const harness = await boot();
    const session = await (await openDevice(harness.process)).createSession('s');
    await preserveNote(session, 1, 'a');
    const next = await harness.liveUpdate();
    const device = await openDevice(next);
    const incoming = await device.retrieveSession('s');
    await noteControl(next, { throwPlain: 'finish' });
    await incoming.close();
    expect(await noteCalls(next)).toEqual(['canFinish a (no file)', 'finish a (no file)']);
    expect(harness.machine.dmesg()).toMatch(
      /LUO: note-v1: finish threw Error: note: finish exploded/,
    );
    await expect(device.retrieveSession('s')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('finishes files in reverse order, never-retrieved ones too, with no file', async () => {
    const calls = await twoStage({
      modules: [NOTE_MODULE],
      ramBytes: TEST_RAM,
      async before(_process, device) {
        const session = await device.createSession('s');
        for (const [token, text] of ['a', 'b', 'c'].entries()) {
          await preserveNote(session, token, text);
        }
      },
      async after(process, device) {
        const session = await device.retrieveSession('s');
        await session.retrieveFd(1n);
        await session.finish();
        return noteCalls(process);
      },
    });
    expect(calls).toEqual([
      'retrieve b',
      'canFinish a (no file)',
      'canFinish b',
      'canFinish c (no file)',
      'finish c (no file)',
      'finish b',
      'finish a (no file)',
    ]);
  });

  it('gives two fds of the same file when a token is retrieved twice', async () => {
    const result = await twoStage({
      modules: [NOTE_MODULE],
      ramBytes: TEST_RAM,
      async before(_process, device) {
        await preserveNote(await device.createSession('s'), 1, 'hello world');
      },
      async after(process, device) {
        const session = await device.retrieveSession('s');
        const first = await session.retrieveFd(1n);
        const second = await session.retrieveFd(1n);
        // One open file: reading through one fd moves the position the other sees.
        const decoder = new TextDecoder();
        const head = decoder.decode(await process.read(first, 6));
        const tail = decoder.decode(await process.read(second, 64));
        return { first, second, head, tail, calls: await noteCalls(process) };
      },
    });
    expect(result.second).not.toBe(result.first);
    expect([result.head, result.tail]).toEqual(['hello ', 'world']);
    expect(result.calls).toEqual(['retrieve hello world']);
  });
});
