// The device scenario's verifier must see a device whose DMA goes astray: damage the restored
// IOMMU page tables — which no checksum covers and no reader can tell from valid ones — and the
// update must count as a silent misread, or the device families' zero would mean nothing.
import { describe, expect, it } from 'vitest';
import {
  IOMMU_PTE_PAGE_SIZE,
  NIC_PACKET_SIZE,
  PAGE_SIZE,
  type PhysicalMemory,
} from '@liveupdate/machine';
import { IOMMU_IOAS_MAP_WRITEABLE, IOMMUFD_LUO_COMPATIBLE } from '@liveupdate/plugin-iommufd';
import {
  BUFFERS_OFFSET,
  MAPS,
  RAM_IOVA,
  RING_SIZE,
  deviceScenario,
} from '../src/device-scenario.js';
import { fuzzUpdate } from '../src/fuzz-update.js';
import type { HandoverMap } from '../src/handover-map.js';
import type { MutationFamily } from '../src/mutation-families.js';

/** Address of the 4 KiB leaf PTE that maps `iova` in the preserved HWPT's page table. */
function leafPte(memory: PhysicalMemory, map: HandoverMap, iova: number): number {
  const iommufd = map.files.find((f) => f.compatible === IOMMUFD_LUO_COMPATIBLE)!;
  // iommufd_hwpt_lu[0].page_table_root, u64 @16 of the entry after the 8-byte iommufd_lu.
  let table = Number(memory.readU64(iommufd.deviceSer!.phys + 8 + 16));
  for (let level = 4; level > 1; level--) {
    const pte = table + (Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512) * 8;
    const entry = memory.readU64(pte);
    expect(Number(entry) & IOMMU_PTE_PAGE_SIZE).toBe(0);
    table = Number(entry & ~0xfffn);
  }
  return table + (Math.floor(iova / PAGE_SIZE) % 512) * 8;
}

function swapLeaves(memory: PhysicalMemory, map: HandoverMap, a: number, b: number): void {
  const [pa, pb] = [leafPte(memory, map, a), leafPte(memory, map, b)];
  const x = memory.readU64(pa);
  memory.writeU64(pa, memory.readU64(pb));
  memory.writeU64(pb, x);
}

const family = (name: string, apply: MutationFamily['apply']): MutationFamily => ({
  name,
  description: name,
  scenario: deviceScenario,
  apply,
});

describe('the device scenario', () => {
  // Each update boots two kernels with a NIC streaming packets; slow on a loaded 2-core machine.
  const timeout = 120_000;

  it(
    'finds an undamaged update intact: no false alarm from the device checks',
    { timeout },
    async () => {
      const result = await fuzzUpdate({
        seed: 1,
        index: 0,
        family: family('nothing', () => 'nothing changed'),
      });
      expect({ outcome: result.outcome, detail: result.detail }).toEqual({
        outcome: 'intact',
        detail: '',
      });
    },
  );

  it(
    'calls a mapping whose pages the restored page table swapped a silent misread',
    { timeout },
    async () => {
      const alias = MAPS.find((m) => (m.prot & IOMMU_IOAS_MAP_WRITEABLE) === 0)!;
      const result = await fuzzUpdate({
        seed: 1,
        index: 0,
        family: family('swap-alias', ({ memory, map }) => {
          swapLeaves(memory, map, alias.iova, alias.iova + PAGE_SIZE);
          return 'the read-only alias: its first two leaf PTEs swapped';
        }),
      });
      expect(result.outcome).toBe('silent-misread');
      expect(result.detail).toContain(
        `mapping at IOVA 0x${alias.iova.toString(16)}: 2 page(s) translated wrong`,
      );
    },
  );

  it(
    'calls a NIC whose DMA lands in the wrong pages of guest RAM a silent misread',
    { timeout },
    async () => {
      const buffers = RAM_IOVA + BUFFERS_OFFSET;
      const pages = (RING_SIZE * NIC_PACKET_SIZE) / PAGE_SIZE;
      const result = await fuzzUpdate({
        seed: 1,
        index: 0,
        family: family('swap-buffers', ({ memory, map }) => {
          // Every page of the packet buffers swapped with the one half the area away: wherever
          // the NIC writes after the update, it writes into another packet's page.
          for (let i = 0; i < pages / 2; i++)
            swapLeaves(memory, map, buffers + i * PAGE_SIZE, buffers + (i + pages / 2) * PAGE_SIZE);
          return 'the packet buffers: leaf PTEs swapped in pairs';
        }),
      });
      expect(result.outcome).toBe('silent-misread');
      expect(result.detail).toMatch(
        /NIC packet \d+ of \d+ \(after the update\): not in guest RAM at its buffer/,
      );
    },
  );
});
