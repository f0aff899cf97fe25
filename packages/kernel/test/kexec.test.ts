import { describe, expect, it } from 'vitest';
import {
  KernelError,
  LINUX_REBOOT_CMD_KEXEC,
  LINUX_REBOOT_CMD_RESTART,
  MachineHaltedError,
  PAGE_SIZE,
} from '@liveupdate/machine';
import {
  CHANNEL_PROBE,
  FAILING_INIT,
  NOT_A_MODULE,
  PROBE,
  TEST_RAM,
  bootedMachine,
  kexec,
  probe,
  testImage,
} from './helpers.js';

interface PreservedEntry {
  phys: number;
  order: number;
  seed: number;
  intact?: boolean;
}
interface Stats {
  pages: { total: number; free: number; allocated: number; reserved: number; scratch: number };
  kho: { preservedFolios: number; unrestoredFolios: number; unrestoredFrames: number };
  khoBoot: boolean;
}

const FIRMWARE_FRAMES = (1024 * 1024) / PAGE_SIZE;
const POISON = 0xaa;

describe('kexec with KHO', () => {
  it('gives the next kernel neither module variables nor closures of the previous one', async () => {
    const machine = await bootedMachine();
    const first = machine.spawn();
    await probe(first, 'setState', { value: 'kernel-0' });
    expect(await probe(first, 'getState')).toEqual({
      moduleVariable: 'kernel-0',
      closure: 'kernel-0',
    });

    const second = await kexec(machine, first, testImage('6.18.1'));
    expect(await probe(second, 'getState')).toEqual({ moduleVariable: 'unset', closure: 'unset' });
  });

  it('brings preserved folios of several orders back byte-identical after one, two and three kexecs', async () => {
    const machine = await bootedMachine();
    let process = machine.spawn();
    const orders = [0, 1, 3, 9, 10];
    const preserved = await probe<PreservedEntry[]>(process, 'preserve', { orders, seed: 40 });
    expect(preserved.map((e) => e.order)).toEqual(orders);

    for (const version of ['6.18.1', '6.18.2', '6.18.3']) {
      process = await kexec(machine, process, testImage(version));
      const verified = await probe<PreservedEntry[]>(process, 'verify', { carry: true });
      expect(verified).toEqual(preserved.map((e) => ({ ...e, intact: true })));
    }
    expect(machine.bootCount).toBe(4);
  });

  it('poisons frames that were written but not preserved', async () => {
    const machine = await bootedMachine();
    const first = machine.spawn();
    const lost = await probe<{ phys: number }>(first, 'writeUnpreserved', { order: 1, seed: 3 });
    const before = await probe<Uint8Array>(first, 'readPhys', {
      phys: lost.phys,
      length: 2 * PAGE_SIZE,
    });
    expect(before.some((byte) => byte !== POISON)).toBe(true);

    const second = await kexec(machine, first, testImage('6.18.1'));
    // The next kernel's modules cannot read a free frame at all; RAM itself shows the poison.
    expect(machine.memory.read(lost.phys, 2 * PAGE_SIZE).every((byte) => byte === POISON)).toBe(
      true,
    );
    await expect(
      probe(second, 'readPhys', { phys: lost.phys, length: 2 * PAGE_SIZE }),
    ).rejects.toMatchObject({ code: 'EFAULT' });
  });

  it('restores a folio only once, and only with the order it was preserved with', async () => {
    const machine = await bootedMachine();
    const first = machine.spawn();
    const [folio] = await probe<PreservedEntry[]>(first, 'preserve', { orders: [2], seed: 1 });
    const second = await kexec(machine, first, testImage('6.18.1'));

    expect(await probe(second, 'restore', { phys: folio!.phys, order: 1 })).toBe('EINVAL');
    expect(await probe(second, 'restore', { phys: folio!.phys, order: 3 })).toBe('EINVAL');
    expect(await probe(second, 'restore', { phys: folio!.phys, order: 2 })).toBeNull();
    expect(await probe(second, 'restore', { phys: folio!.phys, order: 2 })).toBe('EINVAL');
  });

  it('refuses to preserve frames in the scratch area or the firmware area', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const stats = await probe<Stats>(process, 'stats');
    // Scratch sits right above the 1 MiB firmware area (see memory-layout.ts).
    const scratchPfn = FIRMWARE_FRAMES;
    expect(stats.pages.scratch).toBeGreaterThan(0);
    expect(
      await probe(process, 'preserveFolio', {
        pfn: scratchPfn + stats.pages.scratch - 1,
        order: 0,
      }),
    ).toBe('EINVAL');
    expect(await probe(process, 'preservePages', { pfn: scratchPfn + 8, count: 3 })).toBe('EINVAL');
    expect(await probe(process, 'preserveFolio', { pfn: 0, order: 0 })).toBe('EINVAL');
    const folio = await probe<{ phys: number; order: number }>(process, 'allocPages', { order: 0 });
    const pfn = folio.phys / PAGE_SIZE;
    expect(await probe(process, 'preserveFolio', { pfn, order: 0 })).toBeNull();
    expect(await probe(process, 'preserveFolio', { pfn, order: 0 })).toBe('EEXIST');
  });

  it('refuses to preserve memory that is not allocated', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const folio = await probe<{ phys: number; order: number }>(process, 'allocPages', { order: 1 });
    expect(await probe(process, 'freePages', folio)).toBeNull();
    const pfn = folio.phys / PAGE_SIZE;
    expect(await probe(process, 'preserveFolio', { pfn, order: 1 })).toBe('EINVAL');
    expect(await probe(process, 'preservePages', { pfn, count: 2 })).toBe('EINVAL');
  });

  it('keeps preserved folios that nobody restores reserved, and does not hand them over again', async () => {
    const machine = await bootedMachine();
    const first = machine.spawn();
    const [folio] = await probe<PreservedEntry[]>(first, 'preserve', { orders: [3], seed: 9 });

    const second = await kexec(machine, first, testImage('6.18.1'));
    const stats = await probe<Stats>(second, 'stats');
    // The folio (8 frames) and the probe's one-frame list stay reserved beside the firmware area.
    expect(stats.kho.unrestoredFolios).toBe(2);
    expect(stats.kho.unrestoredFrames).toBe(8 + 1);
    expect(stats.pages.reserved).toBe(FIRMWARE_FRAMES + 8 + 1);
    expect(stats.pages.total).toBe(
      stats.pages.free + stats.pages.allocated + stats.pages.reserved + stats.pages.scratch,
    );

    const third = await kexec(machine, second, testImage('6.18.2'));
    const after = await probe<Stats>(third, 'stats');
    expect(after.kho.unrestoredFolios).toBe(0);
    expect(after.pages.reserved).toBe(FIRMWARE_FRAMES);
    expect(await probe(third, 'retrieveSubtree', { name: 'kho-probe' })).toBe('ENOENT');
    expect(await probe(third, 'restore', { phys: folio!.phys, order: 3 })).toBe('EINVAL');
    expect(machine.memory.read(folio!.phys, 8 * PAGE_SIZE).every((byte) => byte === POISON)).toBe(
      true,
    );
    // The second kexec reported what it did not hand on: the subtree, the folios, the bytes.
    expect(machine.dmesg(1)).toMatch(
      new RegExp(
        `KHO: 2 folios \\(36K\\) the previous kernel preserved were never restored and are not handed on; subtrees never retrieved: kho-probe; folios: .*0x${folio!.phys.toString(16)}\\+0x8000`,
      ),
    );
  });

  it('aborts the kexec when a reboot notifier fails, returning its errno, and keeps serving syscalls', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    await probe(process, 'preserve', { orders: [0], seed: 5 });
    await probe(process, 'failReboot', { errno: 'EAGAIN' });
    await process.kexecLoad(testImage('6.18.1'));

    const error = await process.reboot(LINUX_REBOOT_CMD_KEXEC).catch((e: unknown) => e);
    expect(KernelError.isInstance(error) && error.code).toBe('EAGAIN');
    expect((error as KernelError).errno).toBe(11);
    expect(machine.state).toBe('running');
    expect(machine.bootCount).toBe(1);
    expect(process.alive).toBe(true);
    const stats = await probe<Stats>(process, 'stats');
    expect(stats.kho.preservedFolios).toBe(2);
    // KHO is still open for business: nothing was finalized.
    expect(await probe(process, 'allocPreserve', { size: 100 })).toEqual(expect.any(Number));
  });

  it('rejects reboot without a loaded kernel, and commands other than kexec, with EINVAL', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    await expect(process.reboot(LINUX_REBOOT_CMD_KEXEC)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(process.reboot(LINUX_REBOOT_CMD_RESTART)).rejects.toMatchObject({
      code: 'EINVAL',
    });
    await expect(process.reboot(12345)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(machine.state).toBe('running');
  });

  it('refuses to load an image whose modules cannot be imported (ENOEXEC) or that is malformed (EINVAL)', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    await expect(
      process.kexecLoad(testImage('6.18.1', { modules: ['file:///nonexistent/module.js'] })),
    ).rejects.toMatchObject({ code: 'ENOEXEC' });
    await expect(
      process.kexecLoad(testImage('6.18.1', { modules: [NOT_A_MODULE] })),
    ).rejects.toMatchObject({
      code: 'ENOEXEC',
      message: expect.stringMatching(/defineModule/),
    });
    await expect(process.kexecLoad({ ...testImage('6.18.1'), version: '' })).rejects.toMatchObject({
      code: 'EINVAL',
    });
    await expect(
      process.kexecLoad({ ...testImage('6.18.1'), entry: 'http://x/' }),
    ).rejects.toMatchObject({ code: 'EINVAL' });
    // Nothing was loaded, so a reboot still has nothing to boot.
    await expect(process.reboot(LINUX_REBOOT_CMD_KEXEC)).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('ends every process at kexec', async () => {
    const machine = await bootedMachine();
    const bystander = machine.spawn();
    const fd = await bystander.open('/dev/null');
    const rebooter = machine.spawn();
    await kexec(machine, rebooter, testImage('6.18.1'));
    expect(bystander.alive).toBe(false);
    expect(rebooter.alive).toBe(false);
    await expect(bystander.read(fd, 1)).rejects.toMatchObject({ code: 'ESRCH' });
  });

  it('boots a loaded image at reboot when preloading is off', async () => {
    const machine = await bootedMachine(testImage('6.18.0'), { preloadKexecImage: false });
    const first = machine.spawn();
    await probe(first, 'preserve', { orders: [4], seed: 2 });
    const second = await kexec(machine, first, testImage('6.18.1'));
    expect(machine.kernelVersion).toBe('6.18.1');
    expect(await probe(second, 'verify', { carry: false })).toMatchObject([
      { order: 4, intact: true },
    ]);
    const handoff = machine.timeline.find((e) => e.kind === 'trace' && e.name === 'kexec-handoff');
    expect(handoff).toMatchObject({ args: { preloaded: false } });
  });

  it('ignores a handover when the new kernel has KHO off: all memory is free and nothing is restorable', async () => {
    const machine = await bootedMachine();
    const first = machine.spawn();
    await probe(first, 'preserve', { orders: [0, 5], seed: 3 });
    const second = await kexec(machine, first, testImage('6.18.1', { cmdline: 'page_poison=on' }));
    const stats = await probe<Stats>(second, 'stats');
    expect(stats.khoBoot).toBe(false);
    expect(stats.pages.scratch).toBe(0);
    expect(stats.pages.reserved).toBe(
      FIRMWARE_FRAMES + Math.ceil(((TEST_RAM / PAGE_SIZE) * 2) / PAGE_SIZE),
    );
    expect(await probe(second, 'retrieveSubtree', { name: 'kho-probe' })).toBe('ENOENT');
    expect(machine.dmesg()).toMatch(/KHO disabled; ignoring the handover/);
  });

  it('boots a kernel whose module init fails, logging the failure and loading the other modules', async () => {
    const machine = await bootedMachine(testImage('6.18.0', { modules: [FAILING_INIT, PROBE] }));
    expect(machine.dmesg()).toMatch(/failing_init: module init failed: ENODEV: no such hardware/);
    const process = machine.spawn();
    expect(await probe<Stats>(process, 'stats')).toMatchObject({ khoBoot: false });
  });

  it('halts the machine with the reason when a module panics; syscalls then fail with MachineHaltedError', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const error = await probe(process, 'panic', { reason: 'probe says stop' }).catch(
      (e: unknown) => e,
    );
    expect(MachineHaltedError.isInstance(error)).toBe(true);
    expect((error as MachineHaltedError).reason).toBe('probe says stop');
    expect(machine.state).toBe('halted');
    expect(machine.panicReason).toBe('probe says stop');
    expect(machine.dmesg()).toMatch(/Kernel panic - not syncing: probe says stop/);
    await expect(process.open('/dev/null')).rejects.toSatisfy(MachineHaltedError.isInstance);
  });
});

describe('isolation of a kernel worker', () => {
  it('closes every channel to another thread before modules are imported', async () => {
    const machine = await bootedMachine(testImage('6.18.0', { modules: [CHANNEL_PROBE] }));
    const closed = (name: string): string =>
      `${name} is not available to kernel code: kernel workers share nothing but RAM and the boot parameters; keep state across a live update in KHO-preserved memory`;
    expect(await machine.spawn().syscall('channel_probe')).toEqual({
      globalBroadcastChannel: closed('BroadcastChannel'),
      esmBroadcastChannel: closed('BroadcastChannel'),
      cjsBroadcastChannel: closed('BroadcastChannel'),
      worker: closed('Worker'),
      postMessageToThread: closed('postMessageToThread'),
      restoreGlobal: expect.stringMatching(/read.only property 'BroadcastChannel'|Cannot assign/),
      parentPort: null,
      workerData: null,
    });
  });
});
