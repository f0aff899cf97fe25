// Fault injection into FLB ops (injectFault with `flb`), through the same kernel-side injector as
// handler ops, on the fixture's red-v1/blue-v1 items and their FLBs (shared-flb-v1 linked to both,
// red-flb-v1 to red-v1 only): the errno reaches userspace as an FLB's own failure would, and
// nothing is left behind.
import { describe, expect, it } from 'vitest';
import type { Process } from '@liveupdate/machine';
import {
  faultStatus,
  injectFault,
  statsDifferences,
  testkitStats,
  type FaultSpec,
} from '@liveupdate/testkit';
import { FLB_MODULE, boot, createItem, openDevice, preserveItem } from './helpers.js';

const bootItems = () => boot({ modules: [FLB_MODULE], cmdline: 'liveupdate.fault_injection=on' });

/** The handler and FLB calls the fixture recorded since the last look. */
async function itemCalls(process: Process): Promise<string[]> {
  return (await process.syscall('item_control', {})) as string[];
}

/** `flbGetIncoming(shared-flb-v1)` in the kernel: the FLB's text, or the errno name. */
async function incomingFlb(process: Process): Promise<string> {
  return (await process.syscall('item_flb', 'in', 'shared-flb-v1')) as string;
}

describe('setting an FLB fault', () => {
  it.each<[string, unknown, string]>([
    [
      'an FLB that is not registered',
      { flb: 'nope-flb-v1', op: 'preserve', errno: 'EIO' },
      'ENOENT',
    ],
    ['a handler op on an FLB', { flb: 'shared-flb-v1', op: 'freeze', errno: 'EIO' }, 'EINVAL'],
    [
      'both a handler and an FLB',
      { compatible: 'red-v1', flb: 'shared-flb-v1', op: 'preserve', errno: 'EIO' },
      'EINVAL',
    ],
  ])('refuses %s', async (_what, spec, code) => {
    const { process } = await bootItems();
    await expect(injectFault(process, spec as FaultSpec)).rejects.toMatchObject({ code });
    expect((await faultStatus(process)).fault).toBeNull();
  });
});

describe('a fault in an FLB op', () => {
  it('in preserve fails PRESERVE_FD with the errno, rolls back the FLBs before it and leaves nothing behind', async () => {
    const { process } = await bootItems();
    const session = await (await openDevice(process)).createSession('s');
    const fd = await createItem(process, 'red', 'r1');
    const before = await testkitStats(process);
    await injectFault(process, { flb: 'red-flb-v1', op: 'preserve', errno: 'ENOSPC' });
    await expect(session.preserveFd(fd, 1n)).rejects.toMatchObject({ code: 'ENOSPC' });
    // red-flb-v1's own preserve never ran; shared-flb-v1, preserved first, was given back.
    expect(await itemCalls(process)).toEqual([
      'flb preserve shared-flb-v1',
      'flb unpreserve shared-flb-v1 shared-flb-v1',
    ]);
    const status = await faultStatus(process);
    expect(status.fired).toBe(true);
    expect(status.flbCalls['red-flb-v1']).toEqual({ preserve: 1 });
    expect(statsDifferences(before, await testkitStats(process))).toEqual([]);

    // The fault fired once: the same file and token preserve now.
    await session.preserveFd(fd, 1n);
    expect(await itemCalls(process)).toEqual([
      'flb preserve shared-flb-v1',
      'flb preserve red-flb-v1',
      'preserve red:r1 flb=shared-flb-v1',
    ]);
  });

  it('in preserve of the nth file counts only the calls that reach the FLB (its first linked file)', async () => {
    const { process } = await bootItems();
    const device = await openDevice(process);
    const session = await device.createSession('s');
    await injectFault(process, { flb: 'shared-flb-v1', op: 'preserve', nth: 2, errno: 'EIO' });
    await preserveItem(session, 1n, 'blue', 'b1');
    await preserveItem(session, 2n, 'blue', 'b2'); // shared-flb-v1 is preserved already: no call
    expect((await faultStatus(process)).fired).toBe(false);
    await session.close(); // the last file gone: unpreserve; the next file preserves it again
    const again = await device.createSession('t');
    const fd = await createItem(process, 'blue', 'b3');
    await expect(again.preserveFd(fd, 1n)).rejects.toMatchObject({ code: 'EIO' });
    expect((await faultStatus(process)).flbCalls['shared-flb-v1']).toEqual({
      preserve: 2,
      unpreserve: 1,
    });
  });

  it('in retrieve fails flbGetIncoming and the RETRIEVE_FD that needs it with the errno, sticky like a refusal', async () => {
    const harness = await bootItems();
    const session = await (await openDevice(harness.process)).createSession('s');
    await preserveItem(session, 1n, 'blue', 'b1');
    const next = await harness.liveUpdate();
    await injectFault(next, { flb: 'shared-flb-v1', op: 'retrieve', errno: 'ENOMEM' });
    const incoming = await (await openDevice(next)).retrieveSession('s');
    await expect(incoming.retrieveFd(1n)).rejects.toMatchObject({ code: 'ENOMEM' });
    // The FLB's own retrieve never ran, and is not asked again: the refusal is sticky.
    expect(await incomingFlb(next)).toBe('ENOMEM');
    expect(await itemCalls(next)).toEqual(['retrieve blue:b1 (begin)']);
    expect((await faultStatus(next)).flbCalls['shared-flb-v1']).toEqual({ retrieve: 1 });
    expect(harness.machine.dmesg()).toContain(
      'LUO: FLB shared-flb-v1: retrieve failed (ENOMEM: testkit: injected into FLB shared-flb-v1: retrieve (call 1)); the files that depend on it fail with it',
    );
  });

  it('in finish (a plain throw) is logged and LUO carries on: FINISH succeeds', async () => {
    const harness = await bootItems();
    const session = await (await openDevice(harness.process)).createSession('s');
    await preserveItem(session, 1n, 'blue', 'b1');
    const next = await harness.liveUpdate();
    const incoming = await (await openDevice(next)).retrieveSession('s');
    await incoming.retrieveFd(1n);
    await injectFault(next, { flb: 'shared-flb-v1', op: 'finish', kind: 'throw' });
    await itemCalls(next);
    await incoming.finish();
    expect(await itemCalls(next)).toEqual(['finish blue:b1']);
    expect((await faultStatus(next)).fired).toBe(true);
    expect(harness.machine.dmesg()).toMatch(
      /LUO: FLB shared-flb-v1: finish threw Error: testkit: injected throw from FLB shared-flb-v1: finish \(call 1\)[\s\S]*; continuing/,
    );
  });
});
