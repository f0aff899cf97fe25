// Byte-damaged handovers between two kernels: vfio-pci-v1's vfio_pci_core_device_ser and the
// IOMMU FLB it depends on are read against what their writers can produce and against the IOMMU
// and the iommufd of the session. A refusal fails the device file only (sticky errno, logged);
// the device stays claimed and keeps doing DMA through its restored domain.
import { rawLuoHandover, sealLuoHandover } from '@liveupdate/testkit';
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import type { PhysicalMemory } from '@liveupdate/machine';
import { IOMMU_FLB_COMPATIBLE } from '@liveupdate/plugin-iommufd';
import { VFIO_PCI_LUO_COMPATIBLE, VfioDevice, vfioPciCoreDeviceSer } from '../src/index.js';
import { NIC_BDF, NIC_CDEV, bootVfio, errnoOf } from './helpers.js';
import { MiB, VM_TOKENS, createVm, preserveVm, until, type VmFile, type VmLayout } from './vmm.js';

const LAYOUT: VmLayout = {
  ramSize: 4 * MiB,
  nic: { ringGpa: 0x1_0000, buffersGpa: 0x10_0000, ringSize: 16384 },
  copier: { ringGpa: 0x5_0000, completionsGpa: 0x7_0000, ringSize: 64 },
};
const { offsets } = vfioPciCoreDeviceSer;

type Damage = (memory: PhysicalMemory, khoFdtPhys: number) => void;

/** The `data` of FLB `name` in the handover. */
const flbData = (memory: PhysicalMemory, khoFdtPhys: number, name: string): number =>
  Number(rawLuoHandover(memory, khoFdtPhys).flbs.find((f) => f.name === name)!.data);

/** The NIC's `vfio_pci_core_device_ser`, found through the LUO file table. */
const nicSer = (memory: PhysicalMemory, khoFdtPhys: number): number =>
  Number(
    rawLuoHandover(memory, khoFdtPhys)
      .sessions.flatMap((s) => s.files)
      .find(
        (f) => f.entry.compatible === VFIO_PCI_LUO_COMPATIBLE && f.entry.token === VM_TOKENS.nic,
      )!.entry.data,
  );

/** Each case: its name, the damage, the NIC file's errno, what the log says, what is retrieved first. */
const cases: [string, Damage, 'EINVAL' | 'ENOENT', RegExp, VmFile[]][] = [
  [
    "the copy engine's bdf, which another file names",
    (memory, fdt) => memory.write(nicSer(memory, fdt) + offsets.bdf, Uint8Array.of(0x20, 0)),
    'EINVAL',
    /vfio-pci 0000:00:04\.0: vfio_pci_core_device_ser at 0x[0-9a-f]+: bdf 0x20 is another file's device/,
    // The copy engine's intact file claims its own device first.
    ['copier'],
  ],
  [
    'an iommufd_token naming the guest RAM memfd',
    (memory, fdt) => memory.writeU64(nicSer(memory, fdt) + offsets.iommufdToken, VM_TOKENS.memfd),
    'EINVAL',
    /iommufd_token 1 is not an iommufd that preserved the device's IOMMU domain \d+/,
    [],
  ],
  [
    'an iommufd_token not in the session',
    (memory, fdt) => memory.writeU64(nicSer(memory, fdt) + offsets.iommufdToken, 99n),
    'ENOENT',
    /vfio-pci: session "vm0": retrieve of the device at 0x[0-9a-f]+ refused: .*99/,
    [],
  ],
  [
    'another PCI segment',
    (memory, fdt) => memory.writeU32(nicSer(memory, fdt) + offsets.domain, 1),
    'EINVAL',
    /no PCI segment 1/,
    [],
  ],
  [
    'an IOMMU FLB of another version',
    (memory, fdt) => memory.writeU32(flbData(memory, fdt, IOMMU_FLB_COMPATIBLE), 5),
    'EINVAL',
    /LUO: FLB iommu-liveupdate-v1: retrieve failed \(EINVAL: IOMMU FLB: iommu_lu_flb_ser at 0x[0-9a-f]+: version 5 is not 1\)/,
    [],
  ],
];

describe('a damaged vfio-pci handover', () => {
  it.each(cases)(
    'fails the NIC file with a sticky errno, logged, and the NIC keeps streaming: %s',
    async (_name, damage, errno, logged, first) => {
      const harness = await bootVfio({
        onHandover: ({ memory, khoFdtPhys }) => {
          damage(memory, khoFdtPhys!);
          // LUO's checksums would refuse the damage first: reseal them, so vfio is tested.
          sealLuoHandover(memory, khoFdtPhys!);
        },
      });
      const vm = await createVm(harness.process, LAYOUT, { hwptToken: 1 });
      await vm.nic.start();
      await preserveVm(vm, 'vm0');
      const next = await harness.liveUpdate();
      const session = await (await LiveUpdateDevice.open(next)).retrieveSession('vm0');
      for (const file of first) await session.retrieveFd(VM_TOKENS[file]);
      expect(await errnoOf(session.retrieveFd(VM_TOKENS.nic))).toBe(errno);
      expect(await errnoOf(session.retrieveFd(VM_TOKENS.nic))).toBe(errno);
      expect(harness.machine.dmesg()).toMatch(logged);
      expect(harness.machine.dmesg()).toMatch(
        /vfio-pci: session "vm0": retrieve of the device at 0x[0-9a-f]+ refused/,
      );
      // The device is left as the boot left it: claimed for its session, and still doing DMA.
      expect(await errnoOf(VfioDevice.open(next, NIC_CDEV))).toBe('EBUSY');
      const packets = harness.machine.counters(NIC_BDF).packets;
      await until(
        () => harness.machine.counters(NIC_BDF).packets >= packets + 20,
        'the NIC to deliver 20 more packets',
        20_000,
      );
      expect(harness.machine.counters(NIC_BDF).faults).toBe(0);
    },
  );
});
