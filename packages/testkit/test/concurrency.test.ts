import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { boot as bootHarness } from './helpers.js';

const boot = async () => (await bootHarness()).machine;

describe('concurrent ioctls', () => {
  it('let exactly one of two racing preservations of the same file win; the other gets EBUSY', async () => {
    const machine = await boot();
    const process = machine.spawn();
    const device = await LiveUpdateDevice.open(process);
    const [a, b] = await Promise.all([device.createSession('a'), device.createSession('b')]);
    const note = (await process.syscall('note_create', 'shared')) as number;
    const results = await Promise.allSettled([a.preserveFd(note, 1n), b.preserveFd(note, 1n)]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(rejected.reason).toMatchObject({ code: 'EBUSY' });
  });

  it('let exactly one of two racing creations of the same session name win; the other gets EEXIST', async () => {
    const machine = await boot();
    const device = await LiveUpdateDevice.open(machine.spawn());
    const results = await Promise.allSettled([
      device.createSession('vm0'),
      device.createSession('vm0'),
    ]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(
      (results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason,
    ).toMatchObject({
      code: 'EEXIST',
    });
  });

  it('keep one session consistent under many parallel preservations: every token lands once', async () => {
    const machine = await boot();
    const process = machine.spawn();
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession('many');
    const notes = await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) => process.syscall('note_create', `n${i}`) as Promise<number>,
      ),
    );
    // Tokens 0..9 twice each: per token exactly one preservation may succeed.
    const results = await Promise.allSettled(
      notes.map((fd, i) => session.preserveFd(fd, BigInt(i % 10))),
    );
    const codes = results.map((r) =>
      r.status === 'fulfilled' ? 'ok' : (r.reason as { code: string }).code,
    );
    expect(codes.filter((c) => c === 'ok')).toHaveLength(10);
    expect(codes.filter((c) => c === 'EEXIST')).toHaveLength(10);
  });
});
