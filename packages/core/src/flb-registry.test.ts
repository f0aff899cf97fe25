import { describe, expect, it } from 'vitest';
import { KernelLog } from '@liveupdate/kernel';
import { KernelError } from '@liveupdate/machine';
import { defineHandler, type FileHandler } from './file-handler.js';
import { FlbRegistry } from './flb-registry.js';
import { defineFlb, type LiveUpdateFlb } from './liveupdate-flb.js';

function fileHandler(compatible: string): FileHandler {
  return defineHandler({
    compatible,
    canPreserve: () => true,
    preserve: () => undefined,
    unpreserve: () => undefined,
    retrieve: () => undefined,
    finish: () => undefined,
  });
}

/** An FLB recording its calls as "<op> data=<data> obj=<obj>"; `failPreserve` makes it throw. */
function recordingFlb(compatible: string, calls: string[], failPreserve?: () => Error) {
  let preserves = 0;
  return defineFlb({
    compatible,
    preserve(args) {
      calls.push(`${compatible} preserve`);
      if (failPreserve) throw failPreserve();
      preserves++;
      args.data = BigInt(0x1000 * preserves);
      args.obj = `${compatible} out ${preserves}`;
    },
    unpreserve(args) {
      calls.push(`${compatible} unpreserve data=${args.data} obj=${String(args.obj)}`);
    },
    retrieve(args) {
      calls.push(`${compatible} retrieve data=${args.data}`);
      args.obj = `${compatible} in ${args.data}`;
    },
    finish(args) {
      calls.push(`${compatible} finish data=${args.data} obj=${String(args.obj)}`);
    },
  });
}

function registry(): { flbs: FlbRegistry; lines: string[] } {
  const lines: string[] = [];
  const log = new KernelLog((message) => {
    if (message.type === 'log') lines.push(message.text);
  }, KernelLog.now());
  return { flbs: new FlbRegistry({ log, faultInjector: undefined }, log), lines };
}

const codeOf = async (promise: Promise<unknown> | (() => unknown)) => {
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (error) {
    return KernelError.isInstance(error) ? error.code : String(error);
  }
  return 'no error';
};

describe('FLB registration', () => {
  it('links one FLB to several handlers and refuses a second link or a clashing compatible', async () => {
    const { flbs } = registry();
    const a = fileHandler('a-v1');
    const b = fileHandler('b-v1');
    const flb = recordingFlb('shared-v1', []);
    flbs.register(a, flb);
    flbs.register(b, flb);
    expect(flbs.linked(a) && flbs.linked(b)).toBe(true);
    expect(await codeOf(() => flbs.register(a, flb))).toBe('EEXIST');
    expect(await codeOf(() => flbs.register(a, recordingFlb('shared-v1', [])))).toBe('EEXIST');
  });

  it('refuses a malformed FLB with EINVAL, saying what is missing', async () => {
    const { flbs } = registry();
    const h = fileHandler('a-v1');
    const noFinish = { ...recordingFlb('x-v1', []), finish: undefined } as unknown as LiveUpdateFlb;
    expect(() => flbs.register(h, noFinish)).toThrow(/must implement finish\(\)/);
    expect(await codeOf(() => flbs.register(h, recordingFlb('', [])))).toBe('EINVAL');
    expect(await codeOf(() => flbs.register(h, recordingFlb('x'.repeat(48), [])))).toBe('EINVAL');
    expect(await codeOf(() => flbs.register(h, recordingFlb('x'.repeat(47), [])))).toBe('no error');
  });

  it('holds 63 distinct FLBs and refuses the 64th with ENOSPC', async () => {
    const { flbs } = registry();
    const h = fileHandler('a-v1');
    const all = Array.from({ length: 63 }, (_, i) => recordingFlb(`flb-${i}`, []));
    for (const flb of all) flbs.register(h, flb);
    expect(await codeOf(() => flbs.register(h, recordingFlb('flb-63', [])))).toBe('ENOSPC');
    // Linking one of the 63 to another handler takes no new slot.
    expect(await codeOf(() => flbs.register(fileHandler('b-v1'), all[0]!))).toBe('no error');
  });
});

describe('the outgoing refcount', () => {
  it('preserves on the first linked file and unpreserves after the last, across handlers', async () => {
    const calls: string[] = [];
    const { flbs } = registry();
    const a = fileHandler('a-v1');
    const b = fileHandler('b-v1');
    const flb = recordingFlb('shared-v1', calls);
    flbs.register(a, flb);
    flbs.register(b, flb);
    await flbs.filePreserve(a);
    expect(flbs.getOutgoing(flb)).toBe('shared-v1 out 1');
    await flbs.filePreserve(b);
    await flbs.filePreserve(a);
    expect(flbs.outgoingTable()).toEqual([{ name: 'shared-v1', data: 0x1000n, count: 3n }]);
    await flbs.fileUnpreserve(a);
    await flbs.fileUnpreserve(b);
    expect(calls).toEqual(['shared-v1 preserve']);
    await flbs.fileUnpreserve(a);
    expect(calls).toEqual([
      'shared-v1 preserve',
      'shared-v1 unpreserve data=4096 obj=shared-v1 out 1',
    ]);
    expect(flbs.outgoingTable()).toEqual([]);
    expect(await codeOf(() => flbs.getOutgoing(flb))).toBe('ENOENT');
    // Preserved again from zero: a new preserve.
    await flbs.filePreserve(b);
    expect(flbs.getOutgoing(flb)).toBe('shared-v1 out 2');
  });

  it('rolls back the FLBs preserved before a failing one and keeps its errno', async () => {
    const calls: string[] = [];
    const { flbs } = registry();
    const h = fileHandler('a-v1');
    const first = recordingFlb('first-v1', calls);
    const failing = recordingFlb('second-v1', calls, () => new KernelError('ENOMEM', 'no room'));
    flbs.register(h, first);
    flbs.register(h, failing);
    expect(await codeOf(flbs.filePreserve(h))).toBe('ENOMEM');
    expect(calls).toEqual([
      'first-v1 preserve',
      'second-v1 preserve',
      'first-v1 unpreserve data=4096 obj=first-v1 out 1',
    ]);
    expect(flbs.outgoingTable()).toEqual([]);
  });

  it('turns a plain throw from preserve into EIO, logged', async () => {
    const { flbs, lines } = registry();
    const h = fileHandler('a-v1');
    flbs.register(
      h,
      recordingFlb('bad-v1', [], () => new Error('boom')),
    );
    expect(await codeOf(flbs.filePreserve(h))).toBe('EIO');
    expect(lines.join('\n')).toMatch(/LUO: FLB bad-v1: preserve threw Error: boom/);
  });
});

describe('the incoming refcount', () => {
  it('retrieves once on demand and finishes when the last linked file finishes', async () => {
    const calls: string[] = [];
    const { flbs } = registry();
    const a = fileHandler('a-v1');
    const b = fileHandler('b-v1');
    const flb = recordingFlb('shared-v1', calls);
    flbs.register(a, flb);
    flbs.register(b, flb);
    flbs.setIncoming([{ name: 'shared-v1', data: 0x5000n, count: 2n }]);
    const [one, two] = await Promise.all([flbs.getIncoming(flb), flbs.getIncoming(flb)]);
    expect(one).toBe('shared-v1 in 20480');
    expect(two).toBe(one);
    await flbs.fileFinish(b);
    expect(calls).toEqual(['shared-v1 retrieve data=20480']);
    await flbs.fileFinish(a);
    expect(calls).toEqual([
      'shared-v1 retrieve data=20480',
      'shared-v1 finish data=20480 obj=shared-v1 in 20480',
    ]);
    expect(await codeOf(flbs.getIncoming(flb))).toBe('ENOENT');
  });

  it('retrieves implicitly before finish when nobody asked', async () => {
    const calls: string[] = [];
    const { flbs } = registry();
    const a = fileHandler('a-v1');
    const flb = recordingFlb('solo-v1', calls);
    flbs.register(a, flb);
    flbs.setIncoming([{ name: 'solo-v1', data: 0x9000n, count: 1n }]);
    await flbs.fileFinish(a);
    expect(calls).toEqual([
      'solo-v1 retrieve data=36864',
      'solo-v1 finish data=36864 obj=solo-v1 in 36864',
    ]);
  });

  it('keeps a failed retrieve sticky and logged, and never finishes that FLB', async () => {
    const calls: string[] = [];
    const { flbs, lines } = registry();
    const a = fileHandler('a-v1');
    const flb = defineFlb({
      ...recordingFlb('bad-v1', calls),
      retrieve(args) {
        calls.push(`bad-v1 retrieve data=${args.data}`);
        throw new KernelError('EINVAL', 'bad_ser.version 7 is not 1');
      },
    });
    flbs.register(a, flb);
    flbs.setIncoming([{ name: 'bad-v1', data: 0x3000n, count: 1n }]);
    expect(await codeOf(flbs.getIncoming(flb))).toBe('EINVAL');
    await expect(flbs.getIncoming(flb)).rejects.toThrow(
      /^EINVAL: LUO: FLB bad-v1 failed to retrieve before: EINVAL: bad_ser.version 7 is not 1$/,
    );
    await flbs.fileFinish(a);
    // One read of the data only, and no finish on data that was refused.
    expect(calls).toEqual(['bad-v1 retrieve data=12288']);
    expect(lines).toContain(
      'LUO: FLB bad-v1: retrieve failed (EINVAL: bad_ser.version 7 is not 1); the files that depend on it fail with it',
    );
  });

  it('answers ENOENT for an FLB nothing came for, and logs an incoming FLB nobody registered', async () => {
    const { flbs, lines } = registry();
    const flb = recordingFlb('here-v1', []);
    flbs.register(fileHandler('a-v1'), flb);
    flbs.setIncoming([{ name: 'gone-v1', data: 1n, count: 1n }]);
    expect(await codeOf(flbs.getIncoming(flb))).toBe('ENOENT');
    flbs.logUnclaimed();
    expect(lines.join('\n')).toMatch(/incoming FLB "gone-v1" has no registered FLB.*leaked/);
  });

  it('keeps outgoing and incoming state apart for an FLB in both at once', async () => {
    const calls: string[] = [];
    const { flbs } = registry();
    const a = fileHandler('a-v1');
    const flb = recordingFlb('both-v1', calls);
    flbs.register(a, flb);
    flbs.setIncoming([{ name: 'both-v1', data: 0x7000n, count: 1n }]);
    expect(await flbs.getIncoming(flb)).toBe('both-v1 in 28672');
    await flbs.filePreserve(a);
    expect(flbs.getOutgoing(flb)).toBe('both-v1 out 1');
    await flbs.fileFinish(a);
    expect(flbs.getOutgoing(flb)).toBe('both-v1 out 1');
    expect(flbs.outgoingTable()).toEqual([{ name: 'both-v1', data: 0x1000n, count: 1n }]);
    expect(calls.at(-1)).toBe('both-v1 finish data=28672 obj=both-v1 in 28672');
  });
});
