import { describe, expect, it } from 'vitest';
import {
  MachineHardware,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PhysicalMemory,
} from '@liveupdate/machine';
import { KernelLog } from '../kernel-log.js';
import { errnoOf } from '../../test/errno-of.js';
import { PciBus, type PciDevice, type PciDriver } from './pci-bus.js';

function bus() {
  // The hardware's buffers only: no device worker runs here.
  const hardware = new MachineHardware(PhysicalMemory.allocate(1024 * 1024), [
    { kind: 'nic', bdf: '00:03.0' },
    { kind: 'dma-copy', bdf: '00:04.0' },
    { kind: 'nic', bdf: '00:05.0' },
  ]);
  const lines: string[] = [];
  const log = new KernelLog((message) => {
    if (message.type === 'log') lines.push(message.text);
  }, KernelLog.now());
  return { pci: new PciBus(hardware.mmio, log), lines, hardware };
}

/** Let the kernel side's `Atomics.waitAsync` and the handler loop run. */
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));

describe('PCI bus', () => {
  it('logs every device found at enumeration', () => {
    const { pci, lines } = bus();
    expect(pci.devices.map((d) => d.name)).toEqual([
      '0000:00:03.0',
      '0000:00:04.0',
      '0000:00:05.0',
    ]);
    expect(lines).toContain('pci 0000:00:04.0: [8086:0b25] type 00 class 0x088000');
    expect(errnoOf(() => pci.find('00:06.0'))).toBe('ENODEV');
  });

  it('binds a driver to every matching device and unbinds it on unregister', () => {
    const { pci } = bus();
    const probed: string[] = [];
    const removed: string[] = [];
    const driver: PciDriver = {
      name: 'e1000',
      ids: [{ vendor: 0x8086, device: 0x100e }],
      probe: (dev: PciDevice) => {
        if (dev.name.endsWith('05.0')) throw new Error('no link');
        probed.push(dev.name);
      },
      remove: (dev: PciDevice) => removed.push(dev.name),
    };
    pci.registerDriver(driver);
    expect(probed).toEqual(['0000:00:03.0']);
    expect(pci.devices.map((d) => d.driver?.name)).toEqual(['e1000', undefined, undefined]);
    expect(errnoOf(() => pci.registerDriver(driver))).toBe('EEXIST');
    pci.unregisterDriver(driver);
    expect(removed).toEqual(['0000:00:03.0']);
    expect(pci.find('00:03.0').driver).toBeUndefined();
  });

  it('leaves every device without bus mastering after shutdown', () => {
    const { pci } = bus();
    for (const dev of pci.devices) {
      dev.enableDevice();
      dev.setMaster(true);
      dev.writeRegister(0, 1);
    }
    pci.shutdown();
    expect(pci.devices.map((d) => [d.busMaster, d.readRegister(0)])).toEqual([
      [false, 0],
      [false, 0],
      [false, 0],
    ]);
  });

  it('refuses a second irq handler with EBUSY', () => {
    const { pci } = bus();
    const dev = pci.find('00:03.0');
    dev.requestIrq(() => undefined);
    expect(errnoOf(() => dev.requestIrq(() => undefined))).toBe('EBUSY');
    dev.freeIrq();
    dev.requestIrq(() => undefined);
    dev.freeIrq();
  });

  it('calls the irq handler with coalesced counts of delivered interrupts only', async () => {
    const { pci, hardware } = bus();
    const dev = pci.find('00:03.0');
    // The test plays the device: it raises interrupts through the same config space.
    const fn = hardware.function('00:03.0');
    dev.setInterrupts(true);
    fn.raiseInterrupt();
    const counts: number[] = [];
    dev.requestIrq((count) => counts.push(count));
    await settle();
    expect(counts).toEqual([]); // raised before the handler: never delivered

    dev.setInterrupts(false);
    expect(fn.raiseInterrupt()).toBe(false);
    await settle();
    expect(counts).toEqual([]);

    dev.setInterrupts(true);
    for (let i = 0; i < 3; i++) fn.raiseInterrupt();
    await settle();
    fn.raiseInterrupt();
    await settle();
    expect(counts).toEqual([3, 1]);
    dev.freeIrq();
  });

  it('never calls a handler again once freeIrq returned, nor later for what came meanwhile', async () => {
    const { pci, hardware } = bus();
    const dev = pci.find('00:04.0');
    const fn = hardware.function('00:04.0');
    dev.setInterrupts(true);
    const first: number[] = [];
    dev.requestIrq((count) => first.push(count));
    fn.raiseInterrupt();
    // Raised but not yet handled when the handler goes: it is dropped with it.
    dev.freeIrq();
    fn.raiseInterrupt();
    await settle();
    expect(first).toEqual([]);

    const second: number[] = [];
    dev.requestIrq((count) => second.push(count));
    fn.raiseInterrupt();
    await settle();
    expect(second).toEqual([1]);
    dev.freeIrq();
  });

  it('logs a handler that throws and keeps delivering to it', async () => {
    const { pci, hardware, lines } = bus();
    const dev = pci.find('00:03.0');
    const fn = hardware.function('00:03.0');
    dev.setInterrupts(true);
    let calls = 0;
    dev.requestIrq(() => {
      calls++;
      throw new Error('bad handler');
    });
    fn.raiseInterrupt();
    await settle();
    fn.raiseInterrupt();
    await settle();
    expect(calls).toBe(2);
    expect(
      lines.filter((l) => l.includes('irq 0000:00:03.0: handler failed: Error: bad handler')),
    ).toHaveLength(2);
    dev.freeIrq();
  });

  it('sees no new interrupt after a function-level reset, and counts those after it', async () => {
    const { pci, hardware } = bus();
    const dev = pci.find('00:03.0');
    const fn = hardware.function('00:03.0');
    dev.setInterrupts(true);
    for (let i = 0; i < 5; i++) fn.raiseInterrupt();
    const counts: number[] = [];
    dev.requestIrq((count) => counts.push(count));
    dev.reset();
    await settle();
    expect(counts).toEqual([]);
    expect(fn.raiseInterrupt()).toBe(false); // the reset disabled MSI-X
    dev.setInterrupts(true);
    fn.raiseInterrupt();
    await settle();
    expect(counts).toEqual([1]);
    dev.freeIrq();
  });

  it('frees every irq handler at shutdown', async () => {
    const { pci, hardware } = bus();
    const counts: number[] = [];
    for (const dev of pci.devices) {
      dev.setInterrupts(true);
      dev.requestIrq((count) => counts.push(count));
    }
    pci.shutdown();
    for (const fn of hardware.functions) {
      fn.writeConfig16(PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
      expect(fn.raiseInterrupt()).toBe(true);
    }
    await settle();
    expect(counts).toEqual([]);
    // Free again: a new handler may be installed.
    pci.devices[0]!.requestIrq(() => undefined);
    pci.devices[0]!.freeIrq();
  });
});
