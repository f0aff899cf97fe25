import { afterEach, describe, expect, it } from 'vitest';
import { createKernelImage } from '@liveupdate/kernel';
import { Machine, type DeviceSpec } from '@liveupdate/machine';
import { IommufdDevice } from '@liveupdate/plugin-iommufd';
import { VfioDevice } from '../src/index.js';
import { COPY_BDF, NIC_BDF, NIC_CDEV } from './helpers.js';

const machines: Machine[] = [];
afterEach(async () => {
  await Promise.all(machines.splice(0).map((m) => m.shutdown()));
});

async function boot(devices: DeviceSpec[]): Promise<Machine> {
  const machine = Machine.create({ ramBytes: 256 * 1024 * 1024, devices });
  machines.push(machine);
  await machine.boot(
    createKernelImage({
      version: '6.18.0',
      cmdline: 'kho=on liveupdate=on',
      modules: [
        '@liveupdate/core/module',
        '@liveupdate/plugin-memfd',
        '@liveupdate/plugin-iommufd',
        '@liveupdate/plugin-vfio',
      ],
      moduleBase: import.meta.url,
      rehearse: true,
    }),
  );
  return machine;
}

describe("the vfio-pci module's rehearsal", () => {
  it("rehearses a passthrough device on private copies of the devices; the real NIC is the VMM's to bind", async () => {
    const machine = await boot([
      { kind: 'nic', bdf: NIC_BDF, packetsPerSecond: 2000 },
      { kind: 'dma-copy', bdf: COPY_BDF },
    ]);
    expect(machine.dmesg()).toMatch(
      /rehearsal: a live update rehearsed on private memory at load in \d+\.\d ms \(memfd, vfio-pci\)/,
    );
    // The real NIC did no DMA, and the real kernel's vfio-pci hands it out as at power-on.
    expect(machine.counters(NIC_BDF)).toMatchObject({ packets: 0, drops: 0, faults: 0 });
    const process = machine.spawn();
    const nic = await VfioDevice.open(process, NIC_CDEV);
    const iommufd = await IommufdDevice.open(process);
    const devId = await nic.bindIommufd(iommufd.fd);
    await nic.attach(await iommufd.hwptAlloc(devId, await iommufd.allocIoas()));
  });

  it('has nothing to rehearse on a machine without devices, and the rehearsal goes on', async () => {
    const machine = await boot([]);
    expect(machine.dmesg()).toMatch(/rehearsal: a live update rehearsed .* \(memfd, vfio-pci\)/);
  });
});
