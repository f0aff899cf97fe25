// Fault injection (liveupdate.fault_injection=on + the testkit module): any op of any handler
// fails, throws or hangs at its Nth call, and the orchestrator's rollback and the handler's own
// cleanup are seen to hold.
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { until } from '@liveupdate/vitest-config/wait-until';
import type { LiveUpdateSession } from '@liveupdate/core';
import { O_RDONLY, type Process } from '@liveupdate/machine';
import {
  clearFault,
  faultStatus,
  injectFault,
  testkitStats,
  type FaultSpec,
  type LiveUpdateHarness,
} from '@liveupdate/testkit';
import { boot, createNote, noteCalls, openDevice, preserveNote, readNote } from './helpers.js';

const FAULT_INJECTION = 'liveupdate.fault_injection=on';

const bootWithFaults = (): Promise<LiveUpdateHarness> => boot({ cmdline: FAULT_INJECTION });

/** Whether `promise` is still pending after `ms`. */
async function pendingAfter(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await sleep(ms);
  return !settled;
}

/** Wait until the fault set in `process`'s kernel has fired (the op is hanging now). */
async function fired(process: Process): Promise<void> {
  await until(async () => (await faultStatus(process)).fired, 'the fault to fire');
}

/** Preserve notes `texts` in a new session `name` under tokens 1, 2, …; returns the session. */
async function sessionWith(
  process: Process,
  name: string,
  texts: readonly string[],
): Promise<LiveUpdateSession> {
  const device = await openDevice(process);
  const session = await device.createSession(name);
  for (const [i, text] of texts.entries()) await preserveNote(session, i + 1, text);
  await device.close();
  return session;
}

describe('setting a fault', () => {
  it('is EOPNOTSUPP unless the kernel booted with liveupdate.fault_injection=on', async () => {
    const { process } = await boot();
    await expect(
      injectFault(process, { compatible: 'note-v1', op: 'preserve', errno: 'EIO' }),
    ).rejects.toMatchObject({ code: 'EOPNOTSUPP' });
    await expect(testkitStats(process)).resolves.toMatchObject({ openFiles: 0 });
  });

  it.each<[string, unknown, string]>([
    ['an unknown op', { compatible: 'note-v1', op: 'serialize', errno: 'EIO' }, 'EINVAL'],
    ['nth 0', { compatible: 'note-v1', op: 'preserve', nth: 0, errno: 'EIO' }, 'EINVAL'],
    ['an errno fault without errno', { compatible: 'note-v1', op: 'preserve' }, 'EINVAL'],
    [
      'a hang with an errno',
      { compatible: 'note-v1', op: 'retrieve', kind: 'hang', errno: 'EIO' },
      'EINVAL',
    ],
    ['an unknown key', { compatible: 'note-v1', op: 'preserve', errno: 'EIO', times: 2 }, 'EINVAL'],
    [
      'a handler that is not registered',
      { compatible: 'nope-v1', op: 'preserve', errno: 'EIO' },
      'ENOENT',
    ],
  ])('refuses %s', async (_what, spec, code) => {
    const { process } = await bootWithFaults();
    await expect(injectFault(process, spec as FaultSpec)).rejects.toMatchObject({ code });
    expect((await faultStatus(process)).fault).toBeNull();
  });
});

describe('a fault in PRESERVE_FD', () => {
  it.each(['canPreserve', 'getId', 'preserve'] as const)(
    'in %s fails the Nth PRESERVE_FD with the errno and leaves nothing half-registered',
    async (op) => {
      const harness = await bootWithFaults();
      const { process } = harness;
      const session = await sessionWith(process, 's', ['n1']);
      const fd = await createNote(process, 'n2');
      await injectFault(process, { compatible: 'note-v1', op, nth: 2, errno: 'ENOSPC' });
      await preserveNote(session, 9, 'n9'); // the first matching call passes
      const before = await testkitStats(process);
      await noteCalls(process);
      await expect(session.preserveFd(fd, 2)).rejects.toMatchObject({ code: 'ENOSPC' });
      expect(await faultStatus(process)).toMatchObject({ fired: true });
      // The handler's preserve did not run for n2; LUO kept no reference, page or identity of it.
      expect(await noteCalls(process)).toEqual([]);
      expect(await testkitStats(process)).toEqual(before);
      // The same token and the same file work at the next try.
      await session.preserveFd(fd, 2);
      const next = await harness.liveUpdate();
      const incoming = await (await openDevice(next)).retrieveSession('s');
      expect(await readNote(next, await incoming.retrieveFd(2))).toBe('n2');
    },
  );

  it('turns a thrown plain Error into EIO, with the throw in the kernel log', async () => {
    const harness = await bootWithFaults();
    const session = await sessionWith(harness.process, 's', []);
    await injectFault(harness.process, { compatible: 'note-v1', op: 'preserve', kind: 'throw' });
    const fd = await createNote(harness.process, 'n1');
    await expect(session.preserveFd(fd, 1)).rejects.toMatchObject({ code: 'EIO' });
    expect(harness.machine.dmesg()).toMatch(
      /LUO: note-v1: preserve threw Error: testkit: injected throw from note-v1: preserve \(call 1\)/,
    );
  });
});

describe('a fault in freeze', () => {
  it('makes the reboot fail with the errno after unfreezing exactly what was frozen, and a retry carries everything', async () => {
    const harness = await bootWithFaults();
    const { process } = harness;
    await sessionWith(process, 'a', ['a1', 'a2']);
    await sessionWith(process, 'b', ['b1']);
    const before = await testkitStats(process);
    await noteCalls(process);
    await injectFault(process, { compatible: 'note-v1', op: 'freeze', nth: 2, errno: 'EIO' });
    await expect(harness.liveUpdate()).rejects.toMatchObject({ code: 'EIO' });
    // a2's freeze was the injected failure: only a1 was frozen, so only a1 is unfrozen.
    expect(await noteCalls(process)).toEqual(['freeze a1', 'unfreeze a1']);
    expect(harness.machine.bootCount).toBe(1);
    expect(await testkitStats(process)).toEqual(before);

    await clearFault(process);
    const next = await harness.liveUpdate();
    const device = await openDevice(next);
    const texts = [];
    for (const [name, count] of [
      ['a', 2],
      ['b', 1],
    ] as const) {
      const session = await device.retrieveSession(name);
      for (let token = 1; token <= count; token++) {
        texts.push(await readNote(next, await session.retrieveFd(token)));
      }
    }
    expect(texts).toEqual(['a1', 'a2', 'b1']);
  });
});

describe('a fault in retrieve', () => {
  it('is sticky: the token keeps failing with the errno without calling retrieve again, and finish frees it', async () => {
    const harness = await bootWithFaults();
    await sessionWith(harness.process, 's', ['r1', 'r2']);
    const next = await harness.liveUpdate();
    const session = await (await openDevice(next)).retrieveSession('s');
    await injectFault(next, { compatible: 'note-v1', op: 'retrieve', errno: 'ENOMEM' });
    await expect(session.retrieveFd(1)).rejects.toMatchObject({ code: 'ENOMEM' });
    await expect(session.retrieveFd(1)).rejects.toMatchObject({ code: 'ENOMEM' });
    expect((await faultStatus(next)).calls['note-v1']?.retrieve).toBe(1);
    expect(await readNote(next, await session.retrieveFd(2))).toBe('r2');
    await noteCalls(next);
    await session.finish();
    expect(await noteCalls(next)).toEqual([
      'canFinish r1 (no file)',
      'canFinish r2',
      'finish r2',
      'finish r1 (no file)',
    ]);
    expect(await testkitStats(next)).toMatchObject({ khoUnrestoredFolios: 0 });
  });
});

describe('a refused retrieve or finish', () => {
  it('is logged with its session, token, compatible and errno, and readable afterwards in /sys/kernel/liveupdate/failures', async () => {
    const harness = await bootWithFaults();
    await sessionWith(harness.process, 'vm0', ['f1', 'f2']);
    const next = await harness.liveUpdate();
    const session = await (await openDevice(next)).retrieveSession('vm0');
    await injectFault(next, { compatible: 'note-v1', op: 'retrieve', errno: 'ENOMEM' });
    await expect(session.retrieveFd(2)).rejects.toMatchObject({ code: 'ENOMEM' });
    await injectFault(next, { compatible: 'note-v1', op: 'canFinish', errno: 'EIO' });
    await expect(session.finish()).rejects.toBeDefined();

    const retrieve = /LUO: session "vm0" token 2 \(note-v1\): retrieve failed with ENOMEM: .+/;
    expect(harness.machine.dmesg()).toMatch(retrieve);
    const fd = await next.open('/sys/kernel/liveupdate/failures', O_RDONLY);
    const failures = new TextDecoder().decode(await next.read(fd, 65536));
    await next.close(fd);
    const lines = failures.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(retrieve);
    expect(lines[1]).toMatch(
      /LUO: session "vm0" token 1 \(note-v1\): finish refused: canFinish failed: .*EIO/,
    );
  });
});

describe('a fault in a void op', () => {
  it('in unpreserve is logged, and closing the session carries on with the other files', async () => {
    const harness = await bootWithFaults();
    const { process } = harness;
    const before = await testkitStats(process);
    const session = await sessionWith(process, 's', ['u1', 'u2']);
    await noteCalls(process);
    // Files are unpreserved in reverse: the first unpreserve call is u2's.
    await injectFault(process, { compatible: 'note-v1', op: 'unpreserve', kind: 'throw' });
    await session.close();
    expect(await noteCalls(process)).toEqual(['unpreserve u1']);
    expect(harness.machine.dmesg()).toMatch(
      /LUO: note-v1: unpreserve threw Error: testkit: injected throw from note-v1: unpreserve \(call 1\)[\s\S]*; continuing/,
    );
    // LUO let go of both files; u2's page stays preserved, since its handler never ran.
    const after = await testkitStats(process);
    expect(after.openFiles).toBe(before.openFiles);
    expect(after.khoPreservedFolios).toBe(before.khoPreservedFolios + 1);
  });

  it('in finish is logged, and the session finishes', async () => {
    const harness = await bootWithFaults();
    await sessionWith(harness.process, 's', ['f1']);
    const next = await harness.liveUpdate();
    const session = await (await openDevice(next)).retrieveSession('s');
    await injectFault(next, { compatible: 'note-v1', op: 'finish', errno: 'EIO' });
    await expect(session.finish()).resolves.toBeUndefined();
    expect(harness.machine.dmesg()).toMatch(/LUO: note-v1: finish threw .*EIO[\s\S]*; continuing/);
    await expect(session.retrieveFd(1)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('a hang', () => {
  it('of a retrieve blocks that RETRIEVE_FD, while other sessions stay usable', async () => {
    const harness = await bootWithFaults();
    await sessionWith(harness.process, 'a', ['a1']);
    await sessionWith(harness.process, 'b', ['b1']);
    const next = await harness.liveUpdate();
    const device = await openDevice(next);
    const a = await device.retrieveSession('a');
    const b = await device.retrieveSession('b');
    await injectFault(next, { compatible: 'note-v1', op: 'retrieve', kind: 'hang' });
    const hung = a.retrieveFd(1);
    await fired(next);
    expect(await pendingAfter(hung, 50)).toBe(true);
    // Another session, and the hung session's GET_NAME (which takes no session lock), still work.
    expect(await readNote(next, await b.retrieveFd(1))).toBe('b1');
    await b.finish();
    await expect(a.getName()).resolves.toBe('a');
    await expect(device.createSession('c')).resolves.toBeDefined();
    expect(await pendingAfter(hung, 0)).toBe(true);
    await harness.shutdown();
    await expect(hung).rejects.toMatchObject({ code: 'ESRCH' });
  });

  it('of a freeze keeps the reboot from returning: the kexec never happens, the old kernel runs on', async () => {
    const harness = await bootWithFaults();
    const { process } = harness;
    await sessionWith(process, 's', ['z1']);
    await injectFault(process, { compatible: 'note-v1', op: 'freeze', kind: 'hang' });
    const reboot = harness.liveUpdate();
    const other = harness.machine.spawn();
    await fired(other);
    expect(await pendingAfter(reboot, 100)).toBe(true);
    expect(harness.machine.bootCount).toBe(1);
    expect(harness.machine.kernelVersion).toBe('6.18.0');
    await expect(createNote(other, 'still running')).resolves.toBeGreaterThanOrEqual(0);
    await harness.shutdown();
    await expect(reboot).rejects.toMatchObject({ code: 'ESRCH' });
  });
});
