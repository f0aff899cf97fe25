import 'reflect-metadata';
import { describe, expect, it } from 'vitest';
import { MachineHardware, PhysicalMemory, parseBdf } from '@liveupdate/machine';
import { KernelLog } from '../kernel-log.js';
import { errnoOf } from '../../test/errno-of.js';
import { damageKhoSubtreeName } from '../../test/kho-subtree.js';
import { bootMemory } from '../../test/memory-boot.js';
import { PciBus } from './pci-bus.js';
import {
  PCI_DEV_SER_SIZE,
  PCI_LU_SUBTREE,
  PCI_SER_HEADER_SIZE,
  PciHandoverError,
  decodePciSer,
  encodePciSer,
} from './pci-handover.js';

const NIC = parseBdf('00:03.0');
const COPY = parseBdf('00:04.0');

/** One boot's PCI bus on hardware (and RAM) that outlives it. */
function boot(hardware: MachineHardware, memory: PhysicalMemory, fdtPhys: number | null) {
  const { kho, log, lines } = bootMemory(memory, 'kho=on', fdtPhys);
  const pci = new PciBus(hardware.mmio, log, { kho, memory });
  return { pci, kho, lines, kexec: () => boot(hardware, memory, kho.finalize()) };
}

function coldBoot() {
  const memory = PhysicalMemory.allocate(32 * 1024 * 1024);
  const hardware = new MachineHardware(memory, [
    { kind: 'nic', bdf: '00:03.0' },
    { kind: 'dma-copy', bdf: '00:04.0' },
  ]);
  return { memory, hardware, ...boot(hardware, memory, null) };
}

describe('PCI live update', () => {
  it('keeps a preserved device mastering the bus and unreset at kexec, and resets the others', () => {
    const k1 = coldBoot();
    for (const dev of k1.pci.devices) {
      dev.enableDevice();
      dev.setMaster(true);
      dev.writeRegister(0x04, 0x1000);
    }
    k1.pci.preserve(NIC);
    k1.pci.shutdown();
    expect(k1.pci.devices.map((d) => [d.busMaster, d.readRegister(0x04)])).toEqual([
      [true, 0x1000],
      [false, 0],
    ]);
    expect(k1.lines).toContain(
      'pci 0000:00:03.0: shutdown: preserved for live update, left running',
    );
  });

  it('marks the devices the previous kernel preserved as incoming until finished', () => {
    const k1 = coldBoot();
    k1.pci.find(NIC).enableDevice();
    k1.pci.find(NIC).setMaster(true);
    k1.pci.preserve(NIC);
    k1.pci.shutdown();
    const k2 = k1.kexec();
    expect(k2.pci.devices.map((d) => d.incoming)).toEqual([true, false]);
    expect(k2.pci.find(NIC).busMaster).toBe(true);
    expect(errnoOf(() => k2.pci.finishIncoming(COPY))).toBe('EINVAL');
    expect(errnoOf(() => k2.pci.finishIncoming(parseBdf('00:09.0')))).toBe('ENODEV');
    k2.pci.finishIncoming(NIC);
    expect(k2.pci.find(NIC).incoming).toBe(false);
    // Nothing preserved this time: the kernel after knows of no incoming device.
    k2.pci.shutdown();
    const k3 = k2.kexec();
    expect(k3.pci.devices.map((d) => d.incoming)).toEqual([false, false]);
  });

  it('is not taken for a cold start when the pci name is damaged: the device still masters the bus', () => {
    const k1 = coldBoot();
    const nic = k1.pci.find(NIC);
    nic.enableDevice();
    nic.setMaster(true);
    nic.writeRegister(0x04, 0x1000);
    k1.pci.preserve(NIC);
    k1.pci.shutdown();
    const fdt = k1.kho.finalize()!;
    damageKhoSubtreeName(k1.memory, fdt, PCI_LU_SUBTREE);
    expect(() => boot(k1.hardware, k1.memory, fdt)).toThrow(
      /^no pci subtree, but 0000:00:03\.0 still master the bus: the previous kernel preserved them and its handover is damaged$/,
    );
    // Refused before anything touched it: the device runs on, unreset.
    expect([nic.busMaster, nic.readRegister(0x04)]).toEqual([true, 0x1000]);
  });

  it('refcounts preservation and withdraws the pci_ser when the last reference goes', () => {
    const k1 = coldBoot();
    k1.pci.preserve(NIC);
    k1.pci.preserve(NIC);
    expect(k1.pci.preserveCount(NIC)).toBe(2);
    k1.pci.unpreserve(NIC);
    expect(k1.pci.preserveCount(NIC)).toBe(1);
    k1.pci.unpreserve(NIC);
    expect(errnoOf(() => k1.pci.unpreserve(NIC))).toBe('EINVAL');
    expect(errnoOf(() => k1.pci.preserve(parseBdf('00:09.0')))).toBe('ENODEV');
    expect(errnoOf(() => k1.pci.unpreserve(parseBdf('00:09.0')))).toBe('ENODEV');
    expect(k1.kho.stats.preservedFolios).toBe(0);
    const k2 = k1.kexec();
    expect(errnoOf(() => k2.kho.retrieveSubtree(PCI_LU_SUBTREE))).toBe('ENOENT');
    expect(k2.pci.devices.map((d) => d.incoming)).toEqual([false, false]);
  });

  it('refuses to preserve without KHO', () => {
    const memory = PhysicalMemory.allocate(1024 * 1024);
    const hardware = new MachineHardware(memory, [{ kind: 'nic', bdf: '00:03.0' }]);
    const pci = new PciBus(hardware.mmio, new KernelLog(() => undefined, KernelLog.now()));
    expect(errnoOf(() => pci.preserve(NIC))).toBe('EINVAL');
    expect(pci.preserveCount(NIC)).toBe(0);
  });

  it('hands the set over as pci_ser with the documented layout', () => {
    const k1 = coldBoot();
    k1.pci.preserve(COPY);
    k1.pci.preserve(NIC);
    k1.pci.preserve(NIC);
    const fdt = k1.kho.finalize()!;
    // Read the blob the way the next kernel does, before it frees it.
    const probe = boot(
      new MachineHardware(k1.memory, [
        { kind: 'nic', bdf: '00:03.0' },
        { kind: 'dma-copy', bdf: '00:04.0' },
      ]),
      k1.memory,
      fdt,
    );
    const blob = probe.kho.retrieveSubtree(PCI_LU_SUBTREE);
    expect(blob.size).toBe(PCI_SER_HEADER_SIZE + 2 * PCI_DEV_SER_SIZE);
    const view = new DataView(k1.memory.read(blob.phys, blob.size).buffer);
    expect(view.getBigUint64(0, true)).toBe(2n);
    expect(view.getBigUint64(8, true)).toBe(2n);
    expect([view.getUint32(16, true), view.getUint16(20, true), view.getUint16(22, true)]).toEqual([
      0,
      COPY,
      1,
    ]);
    expect([view.getUint32(24, true), view.getUint16(28, true), view.getUint16(30, true)]).toEqual([
      0,
      NIC,
      2,
    ]);
  });
});

describe('pci_ser codec', () => {
  const devices = [{ domain: 0, bdf: NIC, refcount: 3 }];
  /** A bus of four functions, two of them at NIC and COPY. */
  const decode = (bytes: Uint8Array, busSize = 4) =>
    decodePciSer(bytes, busSize, (bdf) => bdf === NIC || bdf === COPY);

  it('round-trips', () => {
    expect(decode(encodePciSer(4, devices))).toEqual(devices);
  });

  const corrupt: [string, (view: DataView) => void, RegExp][] = [
    [
      'a maximum that is not the bus',
      (v) => v.setBigUint64(0, 5n, true),
      /^pci_ser: max_nr_devices 5 is not the 4 functions on the bus$/,
    ],
    ['a count past the blob', (v) => v.setBigUint64(8, 2n, true), /nr_devices 2 \(max 4\)/],
    ['a zero refcount', (v) => v.setUint16(22, 0, true), /pci_dev_ser\[0\]\.refcount is 0/],
    [
      'another PCI segment',
      (v) => v.setUint32(16, 1, true),
      /pci_dev_ser\[0\]\.domain 1: this machine has only segment 0/,
    ],
    [
      'a device that is not on the bus',
      (v) => v.setUint16(20, 0x0900, true),
      /pci_dev_ser\[0\]\.bdf 0000:09:00\.0 is not a function on the bus/,
    ],
  ];
  it.each(corrupt)('rejects %s', (_name, damage, reason) => {
    const bytes = encodePciSer(4, devices);
    damage(new DataView(bytes.buffer));
    expect(() => decode(bytes)).toThrow(PciHandoverError);
    expect(() => decode(bytes)).toThrow(reason);
  });

  it('rejects more devices than the bus has', () => {
    const bytes = encodePciSer(1, [...devices, { domain: 0, bdf: COPY, refcount: 1 }]);
    expect(() => decode(bytes, 1)).toThrow(/nr_devices 2 \(max 1\)/);
  });

  it('rejects a device listed twice', () => {
    const bytes = encodePciSer(4, [...devices, ...devices]);
    expect(() => decode(bytes)).toThrow(/pci_dev_ser\[1\]\.bdf 0000:00:03\.0 is listed twice/);
  });
});
