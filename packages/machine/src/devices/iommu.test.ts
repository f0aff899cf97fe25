import { describe, expect, it } from 'vitest';
import { PAGE_SIZE, PhysicalMemory } from '../physical-memory.js';
import { DmaCounterBlock } from './dma-counters.js';
import { DmaEngine } from './dma-engine.js';
import {
  IOMMU_PTE_PAGE_SIZE,
  IOMMU_PTE_READ,
  IOMMU_PTE_WRITE,
  IommuRegisters,
  IommuTranslation,
} from './iommu.js';
import { PCI_COMMAND, PCI_COMMAND_MASTER, PciFunction, parseBdf } from './pci-function.js';

const MIB = 1024 * 1024;
const RW = IOMMU_PTE_READ | IOMMU_PTE_WRITE;

/** A hand-built set of tables in RAM, in the format of docs/iommu-hardware.md. */
function tables(memory: PhysicalMemory) {
  let next = 1;
  const frame = (): number => {
    const phys = next++ * PAGE_SIZE;
    memory.fill(phys, PAGE_SIZE, 0);
    return phys;
  };
  const root = frame();
  const pageTableRoot = frame();
  const attach = (bdf: number, domainId: number): void => {
    const rootEntry = root + (bdf >> 8) * 16;
    let context = memory.readU32(rootEntry) & ~0xfff;
    if (context === 0) {
      context = frame();
      memory.writeU32(rootEntry, context | 1);
    }
    memory.writeU32(context + (bdf & 0xff) * 16, pageTableRoot | 1);
    memory.writeU32(context + (bdf & 0xff) * 16 + 8, domainId << 8);
  };
  /** Map `iova` to `phys` with a leaf at `leafLevel` (1: 4 KiB, 2: 2 MiB). */
  const map = (iova: number, phys: number, flags: number, leafLevel = 1): number => {
    let table = pageTableRoot;
    for (let level = 4; level > leafLevel; level--) {
      const at = table + (Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512) * 8;
      let child = memory.readU32(at) & ~0xfff;
      if (child === 0) {
        child = frame();
        memory.writeU32(at, child | RW);
      }
      table = child;
    }
    const leaf = table + (Math.floor(iova / 2 ** (12 + 9 * (leafLevel - 1))) % 512) * 8;
    memory.writeU32(leaf, phys | flags | (leafLevel === 2 ? IOMMU_PTE_PAGE_SIZE : 0));
    return leaf;
  };
  return { root, attach, map };
}

function setup() {
  const memory = PhysicalMemory.allocate(8 * MIB);
  const bdf = parseBdf('00:03.0');
  const fn = PciFunction.create(bdf, { vendor: 1, device: 2, classCode: 0, bar0Address: 0 });
  const registers = new IommuRegisters(IommuRegisters.allocate(), [fn]);
  const t = tables(memory);
  registers.setRootTable(t.root);
  registers.setTranslationEnabled(true);
  const translation = new IommuTranslation(memory, registers);
  translation.sync();
  return { memory, bdf, fn, registers, translation, ...t };
}

describe('IOMMU page-table walk', () => {
  it('translates a 4 KiB mapping through root, context and four levels of tables in RAM', () => {
    const { bdf, attach, map, translation } = setup();
    attach(bdf, 5);
    map(0x4000_0000, 0x30_0000, RW);
    expect(translation.translate(bdf, 0x4000_0123, false)).toEqual({ phys: 0x30_0123 });
    expect(translation.translate(bdf, 0x4000_1000, false)).toEqual({ fault: 'PTE_NOT_PRESENT' });
  });

  it('translates anywhere inside a 2 MiB mapping', () => {
    const { bdf, attach, map, translation } = setup();
    attach(bdf, 5);
    map(0x20_0000, 0x40_0000, RW, 2);
    expect(translation.translate(bdf, 0x20_0000, true)).toEqual({ phys: 0x40_0000 });
    expect(translation.translate(bdf, 0x3f_fffc, true)).toEqual({ phys: 0x5f_fffc });
    expect(translation.translate(bdf, 0x40_0000, true)).toEqual({ fault: 'PTE_NOT_PRESENT' });
  });

  it('refuses writes to a read-only mapping but allows reads', () => {
    const { bdf, attach, map, translation } = setup();
    attach(bdf, 5);
    map(0x1000, 0x30_0000, IOMMU_PTE_READ);
    expect(translation.translate(bdf, 0x1000, false)).toEqual({ phys: 0x30_0000 });
    expect(translation.translate(bdf, 0x1000, true)).toEqual({ fault: 'WRITE_DENIED' });
  });

  it('faults a requester with no context entry and one on a bus with no root entry', () => {
    const { attach, map, translation } = setup();
    attach(parseBdf('00:04.0'), 5);
    map(0x1000, 0x30_0000, RW);
    expect(translation.translate(parseBdf('00:03.0'), 0x1000, false)).toEqual({
      fault: 'CONTEXT_NOT_PRESENT',
    });
    expect(translation.translate(parseBdf('01:00.0'), 0x1000, false)).toEqual({
      fault: 'ROOT_NOT_PRESENT',
    });
  });

  it('passes addresses through untranslated while translation is off', () => {
    const { bdf, registers, translation } = setup();
    registers.setTranslationEnabled(false);
    translation.sync();
    expect(translation.translate(bdf, 0x12_3456, true)).toEqual({ phys: 0x12_3456 });
  });

  it('logs a blocked DMA with its IOVA, BDF and reason, and writes nothing', () => {
    const { memory, bdf, fn, registers, attach, map } = setup();
    attach(bdf, 5);
    map(0x1000, 0x30_0000, IOMMU_PTE_READ);
    fn.writeConfig16(PCI_COMMAND, PCI_COMMAND_MASTER);
    const counters = DmaCounterBlock.allocate(1);
    const dma = new DmaEngine(fn, memory, registers, counters, 0);
    memory.fill(0x30_0000, PAGE_SIZE, 0x11);
    let results: unknown[] = [];
    dma.transaction(() => {
      // The second page of this write is unmapped: the whole write is dropped.
      results = [
        dma.write(0x1ff0, new Uint8Array(32).fill(0x22)),
        dma.write(0x1000, new Uint8Array(4)),
      ];
    });
    expect(results).toEqual([false, false]);
    expect(memory.read(0x30_0000, PAGE_SIZE).every((b) => b === 0x11)).toBe(true);
    expect(registers.faults()).toEqual([
      { iova: 0x1ff0, bdf, reason: 'WRITE_DENIED', write: true },
      { iova: 0x1000, bdf, reason: 'WRITE_DENIED', write: true },
    ]);
    expect(counters.read(0)).toMatchObject({ faults: 2, dmaOps: 0, dmaBytes: 0 });
  });
});

describe('IOTLB', () => {
  it('keeps a cached translation until an invalidation, and none after it', () => {
    const { memory, bdf, registers, attach, map, translation } = setup();
    attach(bdf, 5);
    const leaf = map(0x1000, 0x30_0000, RW);
    expect(translation.translate(bdf, 0x1000, true)).toEqual({ phys: 0x30_0000 });
    memory.writeU32(leaf, 0);
    // Without invalidation the hardware may still use the cached entry, as real IOTLBs do.
    expect(translation.translate(bdf, 0x1000, true)).toEqual({ phys: 0x30_0000 });
    registers.invalidateAll();
    translation.sync();
    expect(translation.iotlbSize).toBe(0);
    expect(translation.translate(bdf, 0x1000, true)).toEqual({ fault: 'PTE_NOT_PRESENT' });
  });

  it('caches nothing while GCTL bit 1 disables it: every translation walks the tables', () => {
    const { memory, bdf, registers, attach, map, translation } = setup();
    attach(bdf, 5);
    const leaf = map(0x1000, 0x30_0000, RW);
    const huge = map(0x20_0000, 0x40_0000, RW, 2);
    registers.setIotlbEnabled(false);
    expect(registers.iotlbEnabled).toBe(false);
    translation.sync();
    expect(translation.translate(bdf, 0x1000, true)).toEqual({ phys: 0x30_0000 });
    expect(translation.translate(bdf, 0x20_1000, true)).toEqual({ phys: 0x40_1000 });
    expect(translation.iotlbSize).toBe(0);
    // No invalidation: only a fresh walk can see the cleared PTEs.
    memory.writeU32(leaf, 0);
    memory.writeU32(huge, 0);
    expect(translation.translate(bdf, 0x1000, true)).toEqual({ fault: 'PTE_NOT_PRESENT' });
    expect(translation.translate(bdf, 0x20_1000, true)).toEqual({ fault: 'PTE_NOT_PRESENT' });
    memory.writeU32(leaf, 0x31_0000 | RW);
    expect(translation.translate(bdf, 0x1000, false)).toEqual({ phys: 0x31_0000 });
    registers.setIotlbEnabled(true);
    translation.sync();
    expect(translation.translate(bdf, 0x1000, false)).toEqual({ phys: 0x31_0000 });
    expect(translation.iotlbSize).toBe(1);
    expect(registers.translationEnabled).toBe(true);
  });
});
