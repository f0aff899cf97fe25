import { describe, expect, it } from 'vitest';
import { KernelLog } from '@liveupdate/kernel';
import { KernelError } from '@liveupdate/machine';
import { defineHandler, type FileHandler } from './file-handler.js';
import { FlbRegistry, type FlbChecksums } from './flb-registry.js';
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

/**
 * Checksums as the orchestrator's `PreservedDataChecksums` gives them, over a pretend memory:
 * outgoing, every data is a preserved page whose crc is its page number; incoming, data at
 * 0xb000 is no preserved folio of its data_size and the bytes at 0xc000 do not match.
 */
const CHECKSUMS: FlbChecksums = {
  of: (data) => ({ dataSize: 4096n, dataCrc: Number(data / 4096n) }),
  sizeProblem: (data, { dataSize }) =>
    data === 0xb000n && dataSize !== 0n ? `data_size ${dataSize} is not a folio` : undefined,
  crcProblem: (data, { dataSize }, struct) =>
    data === 0xc000n && dataSize !== 0n ? `${struct} data_crc mismatch` : undefined,
};
const NO_CHECKSUM = { dataSize: 0n, dataCrc: 0 };

function registry(): { flbs: FlbRegistry; lines: string[] } {
  const lines: string[] = [];
  const log = new KernelLog((message) => {
    if (message.type === 'log') lines.push(message.text);
  }, KernelLog.now());
  return { flbs: new FlbRegistry({ log, faultInjector: undefined }, log, CHECKSUMS), lines };
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

  it('holds 51 distinct FLBs (one page of 80-byte luo_flb_ser) and refuses the 52nd with ENOSPC', async () => {
    const { flbs } = registry();
    const h = fileHandler('a-v1');
    const all = Array.from({ length: 51 }, (_, i) => recordingFlb(`flb-${i}`, []));
    for (const flb of all) flbs.register(h, flb);
    expect(await codeOf(() => flbs.register(h, recordingFlb('flb-51', [])))).toBe('ENOSPC');
    // Linking one of the 51 to another handler takes no new slot.
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
    expect(flbs.outgoingTable()).toEqual([
      { name: 'shared-v1', data: 0x1000n, count: 3n, dataSize: 4096n, dataCrc: 1 },
    ]);
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
    flbs.setIncoming([{ name: 'shared-v1', data: 0x5000n, count: 2n, ...NO_CHECKSUM }]);
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
    flbs.setIncoming([{ name: 'solo-v1', data: 0x9000n, count: 1n, ...NO_CHECKSUM }]);
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
    flbs.setIncoming([{ name: 'bad-v1', data: 0x3000n, count: 1n, ...NO_CHECKSUM }]);
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

  it.each([
    [
      'a data_size that is no preserved folio: logged at boot',
      0xb000n,
      'LUO: FLB sum-v1: luo_flb_ser data 0xb000: data_size 4096 is not a folio',
      true,
    ],
    [
      'data that does not match data_crc: logged at the first use',
      0xc000n,
      'LUO: FLB sum-v1: luo_flb_ser data_crc mismatch',
      false,
    ],
  ])(
    'fails an FLB with %s, with a sticky EIO; its retrieve and finish are never called',
    async (_, data, problem, atBoot) => {
      const calls: string[] = [];
      const { flbs, lines } = registry();
      const a = fileHandler('a-v1');
      const flb = recordingFlb('sum-v1', calls);
      flbs.register(a, flb);
      flbs.setIncoming([{ name: 'sum-v1', data, count: 1n, dataSize: 4096n, dataCrc: 7 }]);
      const logged = `${problem}; it is never retrieved and the files that depend on it fail with EIO`;
      expect(lines.includes(logged)).toBe(atBoot);
      for (let i = 0; i < 2; i++) {
        await expect(flbs.getIncoming(flb)).rejects.toThrow(`EIO: ${problem}`);
      }
      await flbs.fileFinish(a);
      expect(calls).toEqual([]);
      expect(lines.filter((line) => line === logged)).toHaveLength(1);
    },
  );

  it('retrieves an FLB whose data matches its data_crc, and one of luo-v1 (data_size 0)', async () => {
    const calls: string[] = [];
    const { flbs } = registry();
    const a = fileHandler('a-v1');
    const good = recordingFlb('good-v1', calls);
    const old = recordingFlb('old-v1', calls);
    flbs.register(a, good);
    flbs.register(a, old);
    flbs.setIncoming([
      { name: 'good-v1', data: 0xd000n, count: 1n, dataSize: 4096n, dataCrc: 13 },
      // At the damaged addresses, but nothing is checksummed: nothing to refuse.
      { name: 'old-v1', data: 0xc000n, count: 1n, ...NO_CHECKSUM },
    ]);
    expect(await flbs.getIncoming(good)).toBe('good-v1 in 53248');
    expect(await flbs.getIncoming(old)).toBe('old-v1 in 49152');
  });

  it('answers ENOENT for an FLB nothing came for, and logs an incoming FLB nobody registered', async () => {
    const { flbs, lines } = registry();
    const flb = recordingFlb('here-v1', []);
    flbs.register(fileHandler('a-v1'), flb);
    flbs.setIncoming([{ name: 'gone-v1', data: 1n, count: 1n, ...NO_CHECKSUM }]);
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
    flbs.setIncoming([{ name: 'both-v1', data: 0x7000n, count: 1n, ...NO_CHECKSUM }]);
    expect(await flbs.getIncoming(flb)).toBe('both-v1 in 28672');
    await flbs.filePreserve(a);
    expect(flbs.getOutgoing(flb)).toBe('both-v1 out 1');
    await flbs.fileFinish(a);
    expect(flbs.getOutgoing(flb)).toBe('both-v1 out 1');
    expect(flbs.outgoingTable()).toEqual([
      { name: 'both-v1', data: 0x1000n, count: 1n, dataSize: 4096n, dataCrc: 1 },
    ]);
    expect(calls.at(-1)).toBe('both-v1 finish data=28672 obj=both-v1 in 28672');
  });
});
