// Byte-damaged handovers between two kernels: the IOMMU FLB and iommufd-v1's iommufd_lu are
// read against what their writers can produce, and a refusal fails only the files that depend
// on them (sticky errno, logged) while the preserved device keeps translating.
import { describe, expect, it } from 'vitest';
import type { PhysicalMemory } from '@liveupdate/machine';
import { rawLuoHandover, sealLuoHandover } from '@liveupdate/testkit';
import {
  IOMMU_FLB_COMPATIBLE,
  IOMMUFD_LUO_COMPATIBLE,
  IommufdDevice,
  iommufdLu,
} from '../src/index.js';
import { errnoOf } from './helpers.js';
import { COPY_ENGINE, TestDevice, bootWithDevices } from './hwpt-helpers.js';
import {
  IOMMUFD_TOKEN,
  MEMFD_TOKEN,
  preserveVmm,
  retrieveSession,
  vmmSetup,
} from './lu-helpers.js';

type Damage = (memory: PhysicalMemory, khoFdtPhys: number) => void;

/** The `data` of FLB `name` in the handover. */
const flbData = (memory: PhysicalMemory, khoFdtPhys: number, name: string): number =>
  Number(rawLuoHandover(memory, khoFdtPhys).flbs.find((f) => f.name === name)!.data);

/** The `iommufd_lu` of the preserved iommufd. */
const iommufdLuAt = (memory: PhysicalMemory, khoFdtPhys: number): number =>
  Number(
    rawLuoHandover(memory, khoFdtPhys)
      .sessions.flatMap((s) => s.files)
      .find((f) => f.entry.compatible === IOMMUFD_LUO_COMPATIBLE)!.entry.data,
  );
/** Offset of `hwpts[0]`'s field `at` in the `iommufd_lu`. */
const hwpt0 = (at: number) => iommufdLu.size + at;

const cases: [string, Damage, RegExp][] = [
  [
    'the IOMMU FLB of another version',
    (memory, fdt) => memory.writeU32(flbData(memory, fdt, IOMMU_FLB_COMPATIBLE), 2),
    /LUO: FLB iommu-liveupdate-v1: retrieve failed \(EINVAL: IOMMU FLB: iommu_lu_flb_ser at 0x[0-9a-f]+: version 2 is not 1\)/,
  ],
  [
    'the IOMMU FLB with a reserved field set',
    (memory, fdt) => memory.writeU32(flbData(memory, fdt, IOMMU_FLB_COMPATIBLE) + 4, 9),
    /IOMMU FLB: iommu_lu_flb_ser at 0x[0-9a-f]+: __reserved is 0x9, not 0/,
  ],
  [
    'a HWPT already reclaimed',
    (memory, fdt) => memory.writeU32(iommufdLuAt(memory, fdt) + hwpt0(4), 1),
    /iommufd: iommufd_lu at 0x[0-9a-f]+: hwpts\[0\]\.reclaimed is 1, not 0/,
  ],
  [
    'a HWPT on a domain the IOMMU did not hand over',
    (memory, fdt) => memory.writeU32(iommufdLuAt(memory, fdt) + hwpt0(8), 77),
    /iommufd: HWPT token 24301: IOMMU domain 77 \(root 0x[0-9a-f]+\) is not in the IOMMU handover/,
  ],
  [
    'a HWPT whose page-table root is 0',
    (memory, fdt) => memory.writeU64(iommufdLuAt(memory, fdt) + hwpt0(16), 0n),
    /hwpts\[0\]\.page_table_root 0x0 is not a page address/,
  ],
  [
    'a reserved header field set',
    (memory, fdt) => memory.writeU32(iommufdLuAt(memory, fdt) + 4, 1),
    /iommufd_lu at 0x[0-9a-f]+: __reserved is 0x1, not 0/,
  ],
];

describe('a damaged iommufd handover', () => {
  it.each(cases)(
    'fails the iommufd with a sticky EINVAL, logged, and leaves the device translating: %s',
    async (_name, damage, logged) => {
      const harness = await bootWithDevices(({ memory, khoFdtPhys }) => {
        damage(memory, khoFdtPhys!);
        // LUO's checksums would refuse the damage first: reseal them, so iommufd is tested.
        sealLuoHandover(memory, khoFdtPhys!);
      });
      const vmm = await vmmSetup(harness.process);
      const oldDomain = (await vmm.device.state()).domainId;
      await preserveVmm(vmm);
      const process = await harness.liveUpdate();
      const session = await retrieveSession(process);
      expect(await errnoOf(session.retrieveFd(IOMMUFD_TOKEN))).toBe('EINVAL');
      expect(await errnoOf(session.retrieveFd(IOMMUFD_TOKEN))).toBe('EINVAL');
      expect(harness.machine.dmesg()).toMatch(logged);
      expect(harness.machine.dmesg()).toMatch(
        /iommufd: session "vm": retrieve of the iommufd at 0x[0-9a-f]+ refused/,
      );
      // Only the files that depend on the damaged data fail: guest RAM comes back.
      await session.retrieveFd(MEMFD_TOKEN);
      // Nothing reset the device or its translation: it is still on the restored domain.
      const device = await TestDevice.open(process, vmm.device.copies);
      await device.bind((await IommufdDevice.open(process)).fd, COPY_ENGINE);
      expect((await device.state()).domainId).toBe(oldDomain);
      expect(harness.machine.hardware.iommu.translationEnabled).toBe(true);
    },
  );
});
