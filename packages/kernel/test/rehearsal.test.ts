import { describe, expect, it } from 'vitest';
import { createKernelImage } from '@liveupdate/kernel';
import { MachineHardware, PhysicalMemory, type KernelImage } from '@liveupdate/machine';
import { devicesLike } from '../src/rehearsal.js';
import { PROBE, bootedMachine, kexec, probe } from './helpers.js';

const REHEARSER = new URL('./fixtures/rehearser.js', import.meta.url).href;
const FAILING_REHEARSAL = new URL('./fixtures/failing-rehearsal.js', import.meta.url).href;

function rehearsingImage(version: string, modules = [PROBE, REHEARSER]): KernelImage {
  return createKernelImage({ version, cmdline: 'kho=on', modules, rehearse: true });
}

const count = (text: string, pattern: RegExp): number => text.match(pattern)?.length ?? 0;

describe('rehearsal of a live update at load', () => {
  it('runs, says so once in the log of the kernel it prepared, and leaves the machine alone', async () => {
    const machine = await bootedMachine(rehearsingImage('6.18.0'));
    const dmesg = machine.dmesg();
    expect(dmesg).toMatch(
      /rehearsal: a live update rehearsed on private memory at load in \d+\.\d ms \(rehearser\)/,
    );
    // The rehearsal's two kernels booted, logged and traced only in the worker.
    expect(count(dmesg, /Linux version/g)).toBe(1);
    expect(count(dmesg, /rehearsal:/g)).toBe(1);
    expect(machine.spans({ name: 'boot' })).toHaveLength(1);
    expect(machine.spans({ name: 'reboot' })).toHaveLength(0);
    expect(machine.bootCount).toBe(1);
  });

  it('leaves the kernel it prepared to live-update as one that did not rehearse', async () => {
    const machine = await bootedMachine(rehearsingImage('6.18.0'));
    const before = machine.spawn();
    const preserved = await probe<{ seed: number }[]>(before, 'preserve', {
      orders: [0, 3, 9],
      seed: 40,
    });
    const after = await kexec(machine, before, rehearsingImage('6.18.1'));
    const folios = await probe<{ seed: number; intact: boolean }[]>(after, 'verify');
    expect(folios.map((f) => [f.seed, f.intact])).toEqual(preserved.map((f) => [f.seed, true]));
    expect(machine.dmesg()).toMatch(/rehearsal: a live update rehearsed/);
    expect(count(machine.dmesg(), /Linux version/g)).toBe(1);
    expect(machine.spans({ name: 'boot' })).toHaveLength(2);
  });

  it('logs a failed rehearsal, naming the module and step, and boots without it', async () => {
    const machine = await bootedMachine(rehearsingImage('6.18.0', [PROBE, FAILING_REHEARSAL]));
    expect(machine.dmesg()).toMatch(
      /rehearsal: failed at failing_rehearsal: after: boom; this kernel runs without it/,
    );
    const process = machine.spawn();
    expect(await probe<unknown[]>(process, 'preserve', { orders: [0], seed: 1 })).toHaveLength(1);
  });

  it('does not run for an image without rehearse', async () => {
    const machine = await bootedMachine(
      createKernelImage({ version: '6.18.0', cmdline: 'kho=on', modules: [PROBE, REHEARSER] }),
    );
    expect(machine.dmesg()).not.toMatch(/rehearsal:/);
  });
});

describe('devicesLike', () => {
  it('gives the rehearsal devices of the kinds and at the addresses of the machine', () => {
    const devices = [
      { kind: 'nic', bdf: '00:03.0' },
      { kind: 'dma-copy', bdf: '00:1f.7' },
    ] as const;
    const hardware = new MachineHardware(PhysicalMemory.allocate(1024 * 1024), devices);
    // In the canonical form, with the PCI domain.
    expect(devicesLike(hardware.mmio)).toEqual(
      devices.map((d) => ({ ...d, bdf: `0000:${d.bdf}` })),
    );
  });
});
