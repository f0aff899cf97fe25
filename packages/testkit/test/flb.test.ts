// FLBs (file-lifecycle-bound shared state, spec/luo-upstream.md §7) and cross-file lookups in a
// session (devices-upstream.md §1.2), through real kexecs: the fixture's red-v1 and blue-v1
// handlers share shared-flb-v1, red-v1 also has red-flb-v1, and an item may depend on another.
import { describe, expect, it } from 'vitest';
import {
  readLuoFileTable,
  readLuoFlbTable,
  readLuoSessionTable,
  type LiveUpdateDevice,
  type LuoFlbSer,
} from '@liveupdate/core';
import { MachineHaltedError, hex, type PhysicalMemory, type Process } from '@liveupdate/machine';
import { liveUpdateImage, statsDifferences, testkitStats } from '@liveupdate/testkit';
import {
  CLAIMS_FORMATS_MODULE,
  FLB_MODULE,
  boot,
  createItem,
  preserveItem,
  openDevice,
  rawLuoHandover,
  readLuoFdt,
  readNote,
  sealLuoHandover,
  type RawLuoFlb,
} from './helpers.js';

interface ItemKnobs {
  failFlbPreserve?: string | null;
  flbText?: string | null;
  failRetrieve?: string | null;
}

const bootItems = (options: Parameters<typeof boot>[0] = {}) =>
  boot({ modules: [FLB_MODULE], ...options });

/** Set knobs; returns the handler and FLB calls since the last look. */
async function itemCalls(process: Process, knobs: ItemKnobs = {}): Promise<string[]> {
  return (await process.syscall('item_control', knobs)) as string[];
}

/** `flbGetOutgoing`/`flbGetIncoming` in the kernel: the FLB object's text, or the errno name. */
async function flbText(
  process: Process,
  direction: 'in' | 'out',
  compatible = 'shared-flb-v1',
): Promise<string> {
  return (await process.syscall('item_flb', direction, compatible)) as string;
}

describe('the outgoing FLB refcount', () => {
  it('calls preserve for the first linked file only and unpreserve after the last, across two handlers', async () => {
    const harness = await bootItems();
    const process = harness.process;
    const device = await openDevice(process);
    const before = await testkitStats(process);
    const session = await device.createSession('s');
    expect(await flbText(process, 'out')).toBe('ENOENT');
    await preserveItem(session, 1n, 'red', 'r1');
    await preserveItem(session, 2n, 'blue', 'b1');
    await preserveItem(session, 3n, 'red', 'r2');
    expect(await flbText(process, 'out')).toBe('shared-flb-v1');
    expect(await flbText(process, 'out', 'red-flb-v1')).toBe('red-flb-v1');
    expect(await itemCalls(process)).toEqual([
      'flb preserve shared-flb-v1',
      'flb preserve red-flb-v1',
      'preserve red:r1 flb=shared-flb-v1',
      'preserve blue:b1 flb=shared-flb-v1',
      'preserve red:r2 flb=shared-flb-v1',
    ]);

    await session.close();
    expect(await itemCalls(process)).toEqual([
      'unpreserve red:r2',
      'unpreserve blue:b1',
      'unpreserve red:r1',
      'flb unpreserve red-flb-v1 red-flb-v1',
      'flb unpreserve shared-flb-v1 shared-flb-v1',
    ]);
    expect(await flbText(process, 'out')).toBe('ENOENT');
    expect(statsDifferences(before, await testkitStats(process))).toEqual([]);
  });

  it('fails PRESERVE_FD with the errno of a failing FLB preserve and leaves nothing preserved', async () => {
    const harness = await bootItems();
    const process = harness.process;
    const session = await (await openDevice(process)).createSession('s');
    const fd = await createItem(process, 'red', 'r1');
    const before = await testkitStats(process);
    await itemCalls(process, { failFlbPreserve: 'red-flb-v1' });
    await expect(session.preserveFd(fd, 1n)).rejects.toMatchObject({ code: 'ENOMEM' });
    expect(await itemCalls(process)).toEqual([
      'flb preserve shared-flb-v1',
      'flb preserve red-flb-v1',
      'flb unpreserve shared-flb-v1 shared-flb-v1',
    ]);
    expect(await flbText(process, 'out')).toBe('ENOENT');
    expect(statsDifferences(before, await testkitStats(process))).toEqual([]);

    // Nothing of the attempt remains: the same file and token preserve once the FLB agrees.
    await itemCalls(process, { failFlbPreserve: null });
    await session.preserveFd(fd, 1n);
    expect(await flbText(process, 'out', 'red-flb-v1')).toBe('red-flb-v1');
  });
});

describe('FLBs across a live update', () => {
  it('hand data over, give it back on retrieve, and finish after the last linked file finishes', async () => {
    const harness = await bootItems();
    const old = harness.process;
    const session = await (await openDevice(old)).createSession('s');
    await itemCalls(old, { flbText: 'written by the old kernel' });
    await preserveItem(session, 1n, 'red', 'r1');
    await preserveItem(session, 2n, 'blue', 'b1');

    const next = await harness.liveUpdate();
    const start = await testkitStats(next);
    expect(await flbText(next, 'out')).toBe('ENOENT');
    expect(await flbText(next, 'in')).toBe('written by the old kernel');
    const device = await openDevice(next);
    const incoming = await device.retrieveSession('s');
    const fd = await incoming.retrieveFd(1n);
    expect(await readNote(next, fd)).toBe('r1');
    expect(await itemCalls(next)).toEqual([
      'flb retrieve shared-flb-v1 written by the old kernel',
      'retrieve red:r1 (begin)',
      'retrieve red:r1 dep=null flb=written by the old kernel',
    ]);

    await incoming.finish();
    // Files finish in reverse; red-flb-v1 was never asked for, so it is retrieved before finish.
    expect(await itemCalls(next)).toEqual([
      'finish blue:b1 (no file)',
      'finish red:r1',
      'flb retrieve red-flb-v1 written by the old kernel',
      'flb finish red-flb-v1 written by the old kernel',
      'flb finish shared-flb-v1 written by the old kernel',
    ]);
    expect(await flbText(next, 'in')).toBe('ENOENT');
    await next.close(fd);
    await incoming.close();
    await device.close();
    // Every preserved page (files, FLBs, LUO's tables) was restored and then freed.
    const after = await testkitStats(next);
    expect([after.khoUnrestoredFolios, after.khoUnrestoredFrames]).toEqual([0, 0]);
    expect(statsDifferences(start, after, ['framesAllocated', 'openFiles'])).toEqual([]);
  });

  it('writes every FLB some file depends on, with its count, in one luo-flb-v1 page', async () => {
    let table: LuoFlbSer[] = [];
    let texts: string[] = [];
    const harness = await bootItems({
      onHandover: ({ memory, khoFdtPhys }) => {
        table = readLuoFlbTable(memory, Number(readLuoFdt(memory, khoFdtPhys!).flbHeaderPhys));
        const decoder = new TextDecoder();
        texts = table.map((flb) =>
          decoder.decode(memory.read(Number(flb.data) + 4, memory.readU32(Number(flb.data)))),
        );
      },
    });
    const device = await openDevice(harness.process);
    const s = await device.createSession('s');
    const t = await device.createSession('t');
    await preserveItem(s, 1n, 'red', 'r1');
    await preserveItem(t, 1n, 'blue', 'b1');
    await preserveItem(t, 2n, 'red', 'r2');
    await preserveItem(s, 2n, 'blue', 'b2');
    await harness.liveUpdate();
    expect(table.map(({ name, count }) => ({ name, count }))).toEqual([
      { name: 'shared-flb-v1', count: 4n },
      { name: 'red-flb-v1', count: 2n },
    ]);
    expect(texts).toEqual(['shared-flb-v1', 'red-flb-v1']);
  });

  it('keeps an FLB outgoing and incoming at once apart, and hands the new one over next', async () => {
    const harness = await bootItems();
    await itemCalls(harness.process, { flbText: 'first' });
    const first = await (await openDevice(harness.process)).createSession('s');
    await preserveItem(first, 1n, 'red', 'r1');

    const second = await harness.liveUpdate();
    const device = await openDevice(second);
    const incoming = await device.retrieveSession('s');
    const fd = await incoming.retrieveFd(1n);
    // r1 is retrieved, not finished: the FLB is incoming, and now outgoing too.
    // The FLB is retrieved on demand, by the first file's retrieve asking for it.
    expect(await itemCalls(second, { flbText: 'second' })).toEqual([
      'retrieve red:r1 (begin)',
      'flb retrieve shared-flb-v1 first',
      'retrieve red:r1 dep=null flb=first',
    ]);
    const outgoing = await device.createSession('t');
    await preserveItem(outgoing, 1n, 'blue', 'b1');
    expect(await flbText(second, 'in')).toBe('first');
    expect(await flbText(second, 'out')).toBe('second');
    expect(await itemCalls(second)).toEqual([
      'flb preserve shared-flb-v1',
      'preserve blue:b1 flb=second',
    ]);
    await second.close(fd);

    const third = await harness.liveUpdate();
    expect(await flbText(third, 'in')).toBe('second');
    expect(await flbText(third, 'in', 'red-flb-v1')).toBe('ENOENT');
  });

  /** Preserve one item, damage the handover with `damage` and reseal it: the new kernel's panic. */
  async function panicAfter(damage: (memory: PhysicalMemory, khoFdtPhys: number) => void) {
    const harness = await bootItems({
      onHandover: ({ memory, khoFdtPhys }) => {
        damage(memory, khoFdtPhys!);
        sealLuoHandover(memory, khoFdtPhys!);
      },
    });
    await preserveItem(
      await (await openDevice(harness.process)).createSession('s'),
      1n,
      'red',
      'r',
    );
    const outcome = await harness.liveUpdate().catch((error: unknown) => error);
    expect(MachineHaltedError.isInstance(outcome)).toBe(true);
    return harness.machine.panicReason;
  }

  it('panics the new kernel when the FLB header is corrupt', async () => {
    const reason = await panicAfter((memory, khoFdtPhys) =>
      memory.writeU64(Number(readLuoFdt(memory, khoFdtPhys).flbHeaderPhys), 2n),
    );
    expect(reason).toMatch(/^LUO: luo_flb_header_ser at .*: pgcnt 2 is not 1/);
  });

  it('panics the new kernel when an FLB entry has reserved bits set', async () => {
    const reason = await panicAfter((memory, khoFdtPhys) => {
      const [shared] = rawLuoHandover(memory, khoFdtPhys).flbs;
      memory.writeU32(shared!.phys + 76, 1);
    });
    expect(reason).toMatch(
      /^LUO: luo_flb_header_ser at 0x[0-9a-f]+: luo_flb_ser\[0\]: reserved is 0x1, not 0/,
    );
  });

  it('never retrieves an FLB no handler of the new kernel registers, and logs the leak', async () => {
    const harness = await bootItems();
    await preserveItem(
      await (await openDevice(harness.process)).createSession('s'),
      1n,
      'red',
      'r',
    );
    // The image says it reads the items and their FLBs, but registers neither.
    const next = await harness.liveUpdate(
      liveUpdateImage({ version: '6.18.1', modules: [CLAIMS_FORMATS_MODULE] }),
    );
    await expect(openDevice(next)).rejects.toMatchObject({ code: 'EIO' });
    const dmesg = harness.machine.dmesg();
    expect(dmesg).toMatch(/incoming FLB "shared-flb-v1" has no registered FLB.*leaked/);
    expect(dmesg).toMatch(/incoming FLB "red-flb-v1" has no registered FLB.*leaked/);
  });
});

describe('FLBs and the check before a kexec', () => {
  it('names each FLB a kernel without their module cannot read, and refuses the kexec', async () => {
    const harness = await bootItems();
    const device = await openDevice(harness.process);
    await preserveItem(await device.createSession('s'), 1n, 'red', 'r');
    await harness.process.kexecLoad(liveUpdateImage({ version: '6.18.1', modules: [] }));
    const report = await device.checkKexec();
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([
      'liveupdate: session "s" token 1: red-v1 writes red-v1; it reads none of them',
      'liveupdate: FLB shared-flb-v1: it does not read it',
      'liveupdate: FLB red-flb-v1: it does not read it',
    ]);
  });
});

describe('getTokenOutgoing', () => {
  async function setUp(): Promise<{ process: Process; device: LiveUpdateDevice }> {
    const harness = await bootItems();
    return { process: harness.process, device: await openDevice(harness.process) };
  }

  it('finds a dependency preserved in the same session, through a dup’ed fd or a reopened file', async () => {
    const { process, device } = await setUp();
    const session = await device.createSession('s');
    const parent = await createItem(process, 'blue', 'parent');
    await session.preserveFd(parent, 42n);
    const viaDup = await createItem(process, 'red', 'child-dup', await process.dup(parent));
    const reopened = (await process.syscall('item_reopen', parent)) as number;
    const viaReopen = await createItem(process, 'red', 'child-reopen', reopened);
    await itemCalls(process);
    await session.preserveFd(viaDup, 1n);
    await session.preserveFd(viaReopen, 2n);
    expect(await itemCalls(process)).toEqual([
      'flb preserve red-flb-v1',
      'preserve red:child-dup dep=42 flb=shared-flb-v1',
      'preserve red:child-reopen dep=42 flb=shared-flb-v1',
    ]);
  });

  it('is ENOENT for a file preserved in another session or not preserved at all', async () => {
    const { process, device } = await setUp();
    const other = await device.createSession('other');
    const session = await device.createSession('s');
    const elsewhere = await createItem(process, 'blue', 'elsewhere');
    await other.preserveFd(elsewhere, 1n);
    const loose = await createItem(process, 'blue', 'loose');
    const before = await testkitStats(process);
    await expect(
      session.preserveFd(await createItem(process, 'red', 'a', elsewhere), 1n),
    ).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(
      session.preserveFd(await createItem(process, 'blue', 'b', loose), 2n),
    ).rejects.toMatchObject({ code: 'ENOENT' });
    await itemCalls(process);
    // The failed preserves took their FLB references back: only "elsewhere" holds the FLB.
    await other.close();
    expect(await itemCalls(process)).toEqual([
      'unpreserve blue:elsewhere',
      'flb unpreserve shared-flb-v1 shared-flb-v1',
    ]);
    const after = await testkitStats(process);
    expect(after.khoPreservedFolios).toBe(before.khoPreservedFolios - 2);
  });
});

describe('getFileIncoming', () => {
  it('retrieves a dependency on demand from inside retrieve, in either order', async () => {
    const harness = await bootItems();
    const old = harness.process;
    const device = await openDevice(old);
    for (const name of ['child-first', 'parent-first']) {
      const session = await device.createSession(name);
      const parent = await createItem(old, 'blue', `${name} parent`);
      await session.preserveFd(parent, 1n);
      await session.preserveFd(await createItem(old, 'red', `${name} child`, parent), 2n);
    }

    const next = await harness.liveUpdate();
    const incoming = await openDevice(next);
    const a = await incoming.retrieveSession('child-first');
    await flbText(next, 'in');
    await itemCalls(next);
    const child = await a.retrieveFd(2n);
    const parent = await a.retrieveFd(1n);
    expect(await readNote(next, parent)).toBe('child-first parent');
    expect(await readNote(next, child)).toBe('child-first child');
    expect(await itemCalls(next)).toEqual([
      'retrieve red:child-first child (begin)',
      'retrieve blue:child-first parent (begin)',
      'retrieve blue:child-first parent dep=null flb=shared-flb-v1',
      'retrieve red:child-first child dep=child-first parent flb=shared-flb-v1',
    ]);

    const b = await incoming.retrieveSession('parent-first');
    await b.retrieveFd(1n);
    await b.retrieveFd(2n);
    expect(await itemCalls(next)).toEqual([
      'retrieve blue:parent-first parent (begin)',
      'retrieve blue:parent-first parent dep=null flb=shared-flb-v1',
      'retrieve red:parent-first child (begin)',
      'retrieve red:parent-first child dep=parent-first parent flb=shared-flb-v1',
    ]);
    await a.finish();
    await b.finish();
  });

  it('keeps the errno of a dependency whose retrieve failed, for the dependent and for RETRIEVE_FD', async () => {
    const harness = await bootItems();
    const session = await (await openDevice(harness.process)).createSession('s');
    const parent = await createItem(harness.process, 'blue', 'parent');
    await session.preserveFd(parent, 1n);
    await session.preserveFd(await createItem(harness.process, 'red', 'child', parent), 2n);

    const next = await harness.liveUpdate();
    await itemCalls(next, { failRetrieve: 'parent' });
    const incoming = await (await openDevice(next)).retrieveSession('s');
    await expect(incoming.retrieveFd(2n)).rejects.toMatchObject({ code: 'EIO' });
    await expect(incoming.retrieveFd(1n)).rejects.toMatchObject({ code: 'EIO' });
    await expect(incoming.retrieveFd(2n)).rejects.toMatchObject({ code: 'EIO' });
    expect(await itemCalls(next)).toEqual([
      'retrieve red:child (begin)',
      'retrieve blue:parent (begin)',
    ]);
  });

  it('answers EDEADLK, not a hang, when two files ask for each other from retrieve', async () => {
    // Preserving cannot build a cycle (a dependency must be preserved first), so the handover is
    // edited: the parent's page is made to depend on the child (token 2).
    const harness = await bootItems({
      onHandover: ({ memory, khoFdtPhys }) => {
        const [session] = readLuoSessionTable(
          memory,
          Number(readLuoFdt(memory, khoFdtPhys!).sessionHeaderPhys),
          10,
        );
        const files = readLuoFileTable(memory, Number(session!.files), Number(session!.count), 10);
        const parentPhys = Number(files.find((f) => f.token === 1n)!.data);
        memory.writeU32(parentPhys + 2048, 1);
        memory.writeU64(parentPhys + 2056, 2n);
        sealLuoHandover(memory, khoFdtPhys!);
      },
    });
    const session = await (await openDevice(harness.process)).createSession('s');
    const parent = await createItem(harness.process, 'blue', 'parent');
    await session.preserveFd(parent, 1n);
    await session.preserveFd(await createItem(harness.process, 'red', 'child', parent), 2n);

    const next = await harness.liveUpdate();
    const incoming = await (await openDevice(next)).retrieveSession('s');
    await expect(incoming.retrieveFd(2n)).rejects.toMatchObject({ code: 'EDEADLK' });
    expect(await itemCalls(next)).toEqual([
      'retrieve red:child (begin)',
      'retrieve blue:parent (begin)',
    ]);
  });
});

describe("the checksum of an FLB's data (luo_flb_ser data_size, data_crc)", () => {
  /**
   * Preserve a red item (shared-flb-v1, red-flb-v1) and a blue one (shared-flb-v1) whose FLB
   * texts are "shared-flb-v1" and "red-flb-v1", damage shared-flb-v1 in the handover with
   * `damage`, and reseal LUO's checksums when `seal`.
   */
  async function handOver(
    damage: (memory: PhysicalMemory, flb: RawLuoFlb) => void,
    seal: boolean,
  ): Promise<{ next: Process; dmesg: () => string; data: number }> {
    let data = 0;
    const harness = await bootItems({
      onHandover: ({ memory, khoFdtPhys }) => {
        const shared = rawLuoHandover(memory, khoFdtPhys!).flbs.find(
          (f) => f.name === 'shared-flb-v1',
        )!;
        data = Number(shared.data);
        damage(memory, shared);
        if (seal) sealLuoHandover(memory, khoFdtPhys!);
      },
    });
    const session = await (await openDevice(harness.process)).createSession('s');
    await preserveItem(session, 1n, 'red', 'r');
    await preserveItem(session, 2n, 'blue', 'b');
    const next = await harness.liveUpdate();
    return { next, dmesg: () => harness.machine.dmesg(), data };
  }

  /** A value-only change: the FLB's text "shared-flb-v1" becomes "shared-flb-v9", same length. */
  const changeText = (memory: PhysicalMemory, flb: RawLuoFlb) =>
    memory.write(Number(flb.data) + 4 + 'shared-flb-v'.length, new TextEncoder().encode('9'));

  it('covers the whole preserved page at data: a value-only change passes every other check', async () => {
    // Resealed, the change is a valid handover: only the checksum can tell.
    const { next } = await handOver((memory, flb) => {
      expect([flb.dataSize, flb.reserved]).toEqual([4096n, 0]);
      changeText(memory, flb);
    }, true);
    expect(await flbText(next, 'in')).toBe('shared-flb-v9');
  });

  it('fails an FLB whose data does not match data_crc with a sticky EIO, logged; the files that depend on it fail, other FLBs do not', async () => {
    const { next, dmesg, data } = await handOver(changeText, false);
    const incoming = await (await openDevice(next)).retrieveSession('s');
    for (const token of [1n, 2n, 1n]) {
      await expect(incoming.retrieveFd(token)).rejects.toMatchObject({ code: 'EIO' });
    }
    expect(await flbText(next, 'in')).toBe('EIO');
    expect(await flbText(next, 'in', 'red-flb-v1')).toBe('red-flb-v1');
    const calls = await itemCalls(next);
    expect(calls).not.toContain('flb retrieve shared-flb-v1 shared-flb-v9');
    expect(calls).toContain('flb retrieve red-flb-v1 red-flb-v1');
    const logged = dmesg().match(
      new RegExp(
        `\\] LUO: FLB shared-flb-v1: luo_flb_ser data_crc 0x[0-9a-f]+ does not match the 4096 bytes at data ${hex(data)} \\(crc32c 0x[0-9a-f]+\\)`,
        'g',
      ),
    );
    // Checked once, logged once (each failed retrieve's own line quotes it, after its reason).
    expect(logged).toHaveLength(1);
    // Finishing the session finishes nothing of the damaged FLB: its data was never used.
    await incoming.finish();
    expect(await itemCalls(next)).not.toContain('flb finish shared-flb-v1 shared-flb-v9');
  });

  it('fails an FLB whose data_size is not the preserved page at data, logged at boot', async () => {
    const { next, dmesg, data } = await handOver((memory, flb) => {
      memory.writeU64(flb.phys + 64, 8192n);
    }, true);
    expect(dmesg()).toContain(
      `LUO: FLB shared-flb-v1: luo_flb_ser data ${hex(data)}: data_size 8192 is not the size of a preserved folio starting there; it is never retrieved and the files that depend on it fail with EIO`,
    );
    const incoming = await (await openDevice(next)).retrieveSession('s');
    await expect(incoming.retrieveFd(2n)).rejects.toMatchObject({ code: 'EIO' });
    expect(await flbText(next, 'in')).toBe('EIO');
  });
});
