import 'reflect-metadata';
import { describe, expect, it } from 'vitest';
import {
  IommuRegisters,
  IommuTranslation,
  PAGE_SIZE,
  PhysicalMemory,
  parseBdf,
} from '@liveupdate/machine';
import { CommandLine } from '../command-line.js';
import { KernelLog } from '../kernel-log.js';
import { planMemoryLayout } from '../memory-layout.js';
import { PageAllocator } from '../page-allocator.js';
import { errnoOf } from '../../test/errno-of.js';
import { IOMMU_HUGE_PAGE_SIZE, IommuDriver } from './iommu-driver.js';

const MiB = 1024 * 1024;
const NIC = parseBdf('00:03.0');

function setup() {
  const memory = PhysicalMemory.allocate(32 * MiB);
  const cmdline = new CommandLine('');
  const log = new KernelLog(() => undefined, KernelLog.now());
  const pages = new PageAllocator(
    memory,
    planMemoryLayout(memory, cmdline, false, null),
    null,
    cmdline,
    log,
  );
  const registers = new IommuRegisters(IommuRegisters.allocate(), []);
  const iommu = new IommuDriver(memory, pages, registers, log);
  const hardware = new IommuTranslation(memory, registers);
  const translate = (bdf: number, iova: number, write = false) => {
    hardware.sync();
    return hardware.translate(bdf, iova, write);
  };
  return { memory, pages, registers, iommu, translate };
}

describe('IOMMU driver', () => {
  it('builds tables the hardware walks, with the permissions asked for', () => {
    const { iommu, pages, translate } = setup();
    const domain = iommu.allocDomain();
    iommu.attachDevice(domain, NIC);
    const frame = pages.allocPages(0).pfn * PAGE_SIZE;
    iommu.map(domain, 0x10_0000, frame, PAGE_SIZE, { read: true });
    expect(translate(NIC, 0x10_0010)).toEqual({ phys: frame + 0x10 });
    expect(translate(NIC, 0x10_0010, true)).toEqual({ fault: 'WRITE_DENIED' });
    expect(translate(parseBdf('00:04.0'), 0x10_0010)).toEqual({ fault: 'CONTEXT_NOT_PRESENT' });
    expect(iommu.iovaToPhys(domain, 0x10_0010)).toBe(frame + 0x10);
  });

  it('uses a 2 MiB leaf when IOVA, address and length allow, and unmaps it whole', () => {
    const { iommu, pages, translate } = setup();
    const domain = iommu.allocDomain();
    iommu.attachDevice(domain, NIC);
    const folio = pages.allocPages(9);
    const phys = folio.pfn * PAGE_SIZE;
    expect(phys % IOMMU_HUGE_PAGE_SIZE).toBe(0);
    const tablesBefore = pages.stats.allocated;
    iommu.map(domain, 0x4000_0000, phys, IOMMU_HUGE_PAGE_SIZE, { read: true, write: true });
    // Levels 3 and 2 only: a 4 KiB mapping would have needed a level-1 table too.
    expect(pages.stats.allocated - tablesBefore).toBe(2);
    expect(translate(NIC, 0x401f_f000, true)).toEqual({ phys: phys + 0x1f_f000 });
    expect(errnoOf(() => iommu.unmap(domain, 0x4000_0000, PAGE_SIZE))).toBe('EINVAL');
    expect(iommu.unmap(domain, 0x4000_0000, IOMMU_HUGE_PAGE_SIZE)).toBe(IOMMU_HUGE_PAGE_SIZE);
    expect(translate(NIC, 0x4000_0000)).toEqual({ fault: 'PTE_NOT_PRESENT' });
  });

  it('refuses to map over an existing mapping and maps nothing then', () => {
    const { iommu, pages } = setup();
    const domain = iommu.allocDomain();
    const frame = pages.allocPages(1).pfn * PAGE_SIZE;
    iommu.map(domain, 0x2000, frame, PAGE_SIZE, { read: true });
    expect(
      errnoOf(() => iommu.map(domain, 0x1000, frame, 2 * PAGE_SIZE, { read: true, write: true })),
    ).toBe('EEXIST');
    expect(iommu.iovaToPhys(domain, 0x1000)).toBeNull();
    expect(errnoOf(() => iommu.map(domain, 0x3000, frame, PAGE_SIZE, {}))).toBe('EINVAL');
    expect(errnoOf(() => iommu.map(domain, 0x3001, frame, PAGE_SIZE, { read: true }))).toBe(
      'EINVAL',
    );
  });

  it('finds one mapped page deep inside a large range and maps none of the range', () => {
    const { iommu, pages } = setup();
    const domain = iommu.allocDomain();
    const frame = pages.allocPages(0).pfn * PAGE_SIZE;
    const lone = 0x4000_0000 + 12 * MiB + 5 * PAGE_SIZE;
    iommu.map(domain, lone, frame, PAGE_SIZE, { read: true });
    const big = pages.allocPages(9).pfn * PAGE_SIZE;
    expect(() => iommu.map(domain, 0x4000_0000, 0, 16 * MiB, { read: true })).toThrow(
      `IOVA 0x${lone.toString(16)} is already mapped`,
    );
    expect(iommu.iovaToPhys(domain, 0x4000_0000)).toBeNull();
    // Right after the lone page the range is free again.
    iommu.map(domain, lone + PAGE_SIZE, big, PAGE_SIZE, { write: true });
    expect(iommu.iovaToPhys(domain, lone + PAGE_SIZE)).toBe(big);
  });

  it('makes unmapped pages fault at once, through the IOTLB', () => {
    const { iommu, pages, translate } = setup();
    const domain = iommu.allocDomain();
    iommu.attachDevice(domain, NIC);
    const frame = pages.allocPages(0).pfn * PAGE_SIZE;
    iommu.map(domain, 0x1000, frame, PAGE_SIZE, { read: true, write: true });
    expect(translate(NIC, 0x1000, true)).toEqual({ phys: frame });
    iommu.unmap(domain, 0x1000, PAGE_SIZE);
    expect(translate(NIC, 0x1000, true)).toEqual({ fault: 'PTE_NOT_PRESENT' });
  });

  it('hands out the lowest free domain id and frees page tables with the domain', () => {
    const { iommu, pages } = setup();
    const allocated = pages.stats.allocated;
    const first = iommu.allocDomain();
    const second = iommu.allocDomain();
    expect([first.id, second.id]).toEqual([1, 2]);
    iommu.map(first, 0x1000, pages.allocPages(0).pfn * PAGE_SIZE, PAGE_SIZE, { read: true });
    iommu.attachDevice(first, NIC);
    expect(errnoOf(() => iommu.attachDevice(second, NIC))).toBe('EBUSY');
    expect(errnoOf(() => iommu.freeDomain(first))).toBe('EBUSY');
    iommu.detachDevice(NIC);
    iommu.freeDomain(first);
    expect(iommu.allocDomain().id).toBe(1);
    // Two domain roots, one context table and the mapped frame remain.
    expect(pages.stats.allocated - allocated).toBe(4);
  });

  it('moves a device to another domain without a moment of missing translation', () => {
    const { iommu, pages, translate } = setup();
    const first = iommu.allocDomain();
    const second = iommu.allocDomain();
    const frameA = pages.allocPages(0).pfn * PAGE_SIZE;
    const frameB = pages.allocPages(0).pfn * PAGE_SIZE;
    iommu.map(first, 0x1000, frameA, PAGE_SIZE, { read: true, write: true });
    iommu.map(second, 0x1000, frameB, PAGE_SIZE, { read: true, write: true });
    iommu.attachDevice(first, NIC);
    expect(translate(NIC, 0x1000, true)).toEqual({ phys: frameA });
    iommu.replaceDevice(second, NIC);
    // The IOTLB held the old translation; the replacement invalidated it.
    expect(translate(NIC, 0x1000, true)).toEqual({ phys: frameB });
    expect(iommu.domainOf(NIC)?.id).toBe(second.id);
    // The old domain has no device left and can go.
    iommu.freeDomain(first);
    expect(errnoOf(() => iommu.freeDomain(second))).toBe('EBUSY');
  });

  it('turns translation off at shutdown', () => {
    const { iommu, registers } = setup();
    expect(registers.translationEnabled).toBe(true);
    iommu.shutdown();
    expect(iommu.translationEnabled).toBe(false);
  });
});
