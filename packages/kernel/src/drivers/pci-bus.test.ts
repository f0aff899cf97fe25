import { describe, expect, it } from 'vitest';
import { MachineHardware, PhysicalMemory } from '@liveupdate/machine';
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
  return { pci: new PciBus(hardware.mmio, log), lines };
}

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
});
