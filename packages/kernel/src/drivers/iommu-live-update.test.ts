import 'reflect-metadata';
import { describe, expect, it } from 'vitest';
import {
  IommuRegisters,
  IommuTranslation,
  PAGE_SIZE,
  PhysicalMemory,
  hex,
  parseBdf,
} from '@liveupdate/machine';
import { CommandLine } from '../command-line.js';
import { KernelLog } from '../kernel-log.js';
import { planMemoryLayout } from '../memory-layout.js';
import { PAGE_POISON, PageAllocator } from '../page-allocator.js';
import { errnoOf } from '../../test/errno-of.js';
import { damageKhoSubtreeName } from '../../test/kho-subtree.js';
import { bootMemory } from '../../test/memory-boot.js';
import { IommuDriver } from './iommu-driver.js';
import {
  IOMMU_LU_CONTEXT_SIZE,
  IOMMU_LU_DEVICE_SIZE,
  IOMMU_LU_DOMAIN_SIZE,
  IOMMU_LU_HEADER_SIZE,
  IOMMU_LU_SUBTREE,
  IommuHandoverError,
  decodeIommuHandover,
  encodeIommuHandover,
} from './iommu-handover.js';

const MiB = 1024 * 1024;
const NIC = parseBdf('00:03.0');
const COPY = parseBdf('00:04.0');
const OTHER_BUS = parseBdf('02:00.0');
const IOVA = 0x10_0000;

/** The memory side of one kernel boot plus its IOMMU driver, on shared RAM and IOMMU registers. */
function boot(memory: PhysicalMemory, registers: SharedArrayBuffer, fdtPhys: number | null) {
  const { pages, kho, log, lines } = bootMemory(memory, 'kho=on page_poison=on', fdtPhys);
  const regs = new IommuRegisters(registers, []);
  const iommu = new IommuDriver(memory, pages, regs, log, kho);
  const hardware = new IommuTranslation(memory, regs);
  const translate = (bdf: number, iova: number, write = false) => {
    hardware.sync();
    return hardware.translate(bdf, iova, write);
  };
  return { memory, registers, regs, pages, kho, iommu, translate, lines };
}

type Boot = ReturnType<typeof boot>;

function coldBoot(): Boot {
  return boot(PhysicalMemory.allocate(32 * MiB), IommuRegisters.allocate(), null);
}

/** What the kernel does at kexec: KHO finalizes, the IOMMU shuts down; then the next boot. */
function kexec(k: Boot): Boot {
  const fdt = k.kho.finalize();
  k.iommu.shutdown();
  return boot(k.memory, k.registers, fdt);
}

/** A domain mapping one data page at IOVA for `bdf`, preserved with the device. */
function preservedNic(k: Boot, bdf = NIC) {
  const domain = k.iommu.allocDomain();
  k.iommu.attachDevice(domain, bdf);
  const data = k.pages.allocPages(0, { zero: true });
  k.iommu.map(domain, IOVA, data.pfn * PAGE_SIZE, PAGE_SIZE, { read: true, write: true });
  k.iommu.preserveDomain(domain);
  k.iommu.preserveDevice(bdf, domain);
  // The data page belongs to its owner (a memfd), which preserves it itself.
  k.kho.preserveFolio(data);
  return { domain, data };
}

const isPoison = (memory: PhysicalMemory, phys: number) =>
  memory.read(phys, PAGE_SIZE).every((b) => b === PAGE_POISON);

describe('IOMMU live update', () => {
  it('keeps a preserved device translating through the same tables across the kexec', () => {
    const k1 = coldBoot();
    const { data } = preservedNic(k1);
    const copyDomain = k1.iommu.allocDomain();
    k1.iommu.attachDevice(copyDomain, COPY);
    const copyData = k1.pages.allocPages(0).pfn * PAGE_SIZE;
    k1.iommu.map(copyDomain, IOVA, copyData, PAGE_SIZE, { write: true });
    expect(k1.translate(COPY, IOVA, true)).toEqual({ phys: copyData });

    k1.kho.finalize();
    k1.iommu.shutdown();
    // Between the kernels: the preserved device still translates, the other one faults.
    expect(k1.regs.translationEnabled).toBe(true);
    expect(k1.translate(NIC, IOVA + 8, true)).toEqual({ phys: data.pfn * PAGE_SIZE + 8 });
    expect(k1.translate(COPY, IOVA, true)).toEqual({ fault: 'CONTEXT_NOT_PRESENT' });
  });

  it('adopts the preserved state in the next kernel: same root, restored domain, reserved id', () => {
    const k1 = coldBoot();
    const { domain, data } = preservedNic(k1);
    const root = k1.regs.rootTable;
    const k2 = kexec(k1);

    expect(k2.regs.translationEnabled).toBe(true);
    expect(k2.regs.rootTable).toBe(root);
    expect(k2.translate(NIC, IOVA + 8, true)).toEqual({ phys: data.pfn * PAGE_SIZE + 8 });
    expect(k2.iommu.restoredDomainOf(NIC)).toEqual(domain);
    expect(k2.iommu.domainOf(NIC)).toEqual(domain);
    expect(k2.iommu.restoredDomainOf(COPY)).toBeUndefined();
    // The tables were restored through KHO: the allocator does not hand them out...
    expect(k2.pages.isAllocated(root / PAGE_SIZE, 0)).toBe(true);
    expect(k2.pages.isAllocated(domain.pageTableRoot / PAGE_SIZE, 0)).toBe(true);
    // ...and the next domain gets another id.
    expect(k2.iommu.allocDomain().id).not.toBe(domain.id);
    // Only the data page the owner preserved is left unrestored in KHO.
    expect(k2.kho.stats.unrestoredFolios).toBe(1);
  });

  it('clears the context entries of devices that were not preserved, on both sides', () => {
    const k1 = coldBoot();
    preservedNic(k1);
    const other = k1.iommu.allocDomain();
    k1.iommu.attachDevice(other, COPY);
    const k2 = kexec(k1);
    expect(k2.translate(COPY, IOVA)).toEqual({ fault: 'CONTEXT_NOT_PRESENT' });
    expect(k2.iommu.domainOf(COPY)).toBeUndefined();
    expect(k2.iommu.domains.map((d) => d.id)).toEqual([k2.iommu.domainOf(NIC)!.id]);
  });

  it('replaces the device onto a new domain hitlessly, then frees the restored domain and its frames', () => {
    const k1 = coldBoot();
    const { data } = preservedNic(k1);
    const k2 = kexec(k1);
    k2.kho.restoreFolio(data.pfn * PAGE_SIZE, 0);
    const restored = k2.iommu.restoredDomainOf(NIC)!;
    expect(
      errnoOf(() =>
        k2.iommu.map(restored, 0x40_0000, data.pfn * PAGE_SIZE, PAGE_SIZE, { read: true }),
      ),
    ).toBe('EBUSY');
    expect(errnoOf(() => k2.iommu.unmap(restored, IOVA, PAGE_SIZE))).toBe('EBUSY');
    expect(errnoOf(() => k2.iommu.preserveDomain(restored))).toBe('EINVAL');

    const fresh = k2.iommu.allocDomain();
    k2.iommu.map(fresh, IOVA, data.pfn * PAGE_SIZE, PAGE_SIZE, { read: true, write: true });
    k2.iommu.replaceDevice(fresh, NIC);
    expect(k2.translate(NIC, IOVA, true)).toEqual({ phys: data.pfn * PAGE_SIZE });
    expect(k2.iommu.domainOf(NIC)).toEqual(fresh);

    const before = k2.pages.stats;
    k2.iommu.freeDomain(restored);
    // A 4-level table for one page is 4 frames; they return to the allocator, poisoned.
    expect(k2.pages.stats.free - before.free).toBe(4);
    expect(isPoison(k2.memory, restored.pageTableRoot)).toBe(true);
    expect(k2.iommu.restoredDomainOf(NIC)).toBeUndefined();
    expect(k2.translate(NIC, IOVA, true)).toEqual({ phys: data.pfn * PAGE_SIZE });
  });

  it('lists the restored domains that live and tells which still have devices attached', () => {
    const k1 = coldBoot();
    const { domain: nicDomain, data } = preservedNic(k1);
    const lone = k1.iommu.allocDomain();
    k1.iommu.preserveDomain(lone);
    const k2 = kexec(k1);
    k2.kho.restoreFolio(data.pfn * PAGE_SIZE, 0);
    const fresh = k2.iommu.allocDomain();
    expect(k2.iommu.restoredDomains()).toEqual([nicDomain, lone]);
    expect(k2.iommu.hasAttachments(nicDomain)).toBe(true);
    expect(k2.iommu.hasAttachments(lone)).toBe(false);
    expect(k2.iommu.hasAttachments(fresh)).toBe(false);

    k2.iommu.map(fresh, IOVA, data.pfn * PAGE_SIZE, PAGE_SIZE, { read: true, write: true });
    k2.iommu.replaceDevice(fresh, NIC);
    expect(k2.iommu.hasAttachments(nicDomain)).toBe(false);
    expect(k2.iommu.hasAttachments(fresh)).toBe(true);
    k2.iommu.freeDomain(lone);
    expect(k2.iommu.restoredDomains()).toEqual([nicDomain]);
    expect(errnoOf(() => k2.iommu.hasAttachments(lone))).toBe('ENOENT');
  });

  it('survives a second live update in a row with a newly preserved domain', () => {
    const k1 = coldBoot();
    const { data } = preservedNic(k1);
    const k2 = kexec(k1);
    k2.kho.restoreFolio(data.pfn * PAGE_SIZE, 0);
    const restored = k2.iommu.restoredDomainOf(NIC)!;
    const fresh = k2.iommu.allocDomain();
    k2.iommu.map(fresh, IOVA, data.pfn * PAGE_SIZE, PAGE_SIZE, { read: true, write: true });
    k2.iommu.replaceDevice(fresh, NIC);
    k2.iommu.freeDomain(restored);
    k2.iommu.preserveDomain(fresh);
    k2.iommu.preserveDevice(NIC, fresh);
    k2.kho.preserveFolio(data);

    const k3 = kexec(k2);
    expect(k3.iommu.restoredDomainOf(NIC)).toEqual(fresh);
    expect(k3.translate(NIC, IOVA + 4, true)).toEqual({ phys: data.pfn * PAGE_SIZE + 4 });
  });

  it('behaves as before when nothing is preserved: translation off at kexec, fresh state next', () => {
    const k1 = coldBoot();
    const domain = k1.iommu.allocDomain();
    k1.iommu.attachDevice(domain, NIC);
    const fdt = k1.kho.finalize();
    k1.iommu.shutdown();
    expect(k1.regs.translationEnabled).toBe(false);
    const k2 = boot(k1.memory, k1.registers, fdt);
    expect(k2.regs.translationEnabled).toBe(true);
    expect(k2.kho.stats.unrestoredFolios).toBe(0);
    expect(k2.iommu.domains).toEqual([]);
    expect(k2.iommu.restoredDomainOf(NIC)).toBeUndefined();
    expect(k2.translate(NIC, IOVA)).toEqual({ fault: 'ROOT_NOT_PRESENT' });
  });

  it('hands over a preserved domain with no device without keeping translation on', () => {
    const k1 = coldBoot();
    const domain = k1.iommu.allocDomain();
    const data = k1.pages.allocPages(0).pfn * PAGE_SIZE;
    k1.iommu.map(domain, IOVA, data, PAGE_SIZE, { read: true });
    k1.iommu.preserveDomain(domain);
    const fdt = k1.kho.finalize();
    k1.iommu.shutdown();
    expect(k1.regs.translationEnabled).toBe(false);
    const k2 = boot(k1.memory, k1.registers, fdt);
    expect(k2.iommu.domains).toEqual([domain]);
    expect(k2.iommu.iovaToPhys(domain, IOVA)).toBe(data);
    expect(k2.iommu.allocDomain().id).not.toBe(domain.id);
    const free = k2.pages.stats.free;
    k2.iommu.freeDomain(domain);
    expect(k2.pages.stats.free - free).toBe(4);
  });

  it('makes a preserved domain immutable and refuses to free it until unpreserved', () => {
    const k = coldBoot();
    const domain = k.iommu.allocDomain();
    k.iommu.preserveDomain(domain);
    const frame = k.pages.allocPages(0).pfn * PAGE_SIZE;
    expect(errnoOf(() => k.iommu.map(domain, IOVA, frame, PAGE_SIZE, { read: true }))).toBe(
      'EBUSY',
    );
    expect(errnoOf(() => k.iommu.unmap(domain, IOVA, PAGE_SIZE))).toBe('EBUSY');
    expect(errnoOf(() => k.iommu.freeDomain(domain))).toBe('EBUSY');
    expect(errnoOf(() => k.iommu.preserveDomain(domain))).toBe('EBUSY');
    k.iommu.unpreserveDomain(domain);
    expect(errnoOf(() => k.iommu.unpreserveDomain(domain))).toBe('ENOENT');
    k.iommu.map(domain, IOVA, frame, PAGE_SIZE, { read: true });
    k.iommu.freeDomain(domain);
    expect(k.kho.stats.preservedFolios).toBe(0);
  });

  it('preserves every page-table frame of a domain, and only those plus its blob', () => {
    const k = coldBoot();
    const domain = k.iommu.allocDomain();
    const data = k.pages.allocPages(0).pfn * PAGE_SIZE;
    k.iommu.map(domain, IOVA, data, PAGE_SIZE, { read: true });
    k.iommu.map(domain, 2 ** 40, data, PAGE_SIZE, { read: true });
    k.iommu.preserveDomain(domain);
    // Root, then 3 tables per IOVA (the two IOVAs share none below the root): 7, plus the blob.
    expect(k.kho.stats.preservedFolios).toBe(8);
    expect(errnoOf(() => k.kho.preserveFolio({ pfn: data / PAGE_SIZE, order: 0 }))).toBeUndefined();
  });

  it('checks the arguments of preserveDevice and refcounts the root and context tables', () => {
    const k = coldBoot();
    const domain = k.iommu.allocDomain();
    k.iommu.attachDevice(domain, NIC);
    k.iommu.attachDevice(domain, COPY);
    expect(errnoOf(() => k.iommu.preserveDevice(NIC, domain))).toBe('EINVAL');
    k.iommu.preserveDomain(domain);
    expect(errnoOf(() => k.iommu.preserveDevice(OTHER_BUS, domain))).toBe('EINVAL');
    const folios = k.kho.stats.preservedFolios;
    k.iommu.preserveDevice(NIC, domain);
    // Root + the bus-0 context table.
    expect(k.kho.stats.preservedFolios).toBe(folios + 2);
    expect(errnoOf(() => k.iommu.preserveDevice(NIC, domain))).toBe('EBUSY');
    k.iommu.preserveDevice(COPY, domain);
    expect(k.kho.stats.preservedFolios).toBe(folios + 2);
    // A context table for a new bus is preserved while the unit is.
    const other = k.iommu.allocDomain();
    k.iommu.attachDevice(other, OTHER_BUS);
    expect(k.kho.stats.preservedFolios).toBe(folios + 3);

    expect(errnoOf(() => k.iommu.detachDevice(NIC))).toBe('EBUSY');
    expect(errnoOf(() => k.iommu.replaceDevice(other, NIC))).toBe('EBUSY');
    expect(errnoOf(() => k.iommu.unpreserveDomain(domain))).toBe('EBUSY');
    k.iommu.unpreserveDevice(NIC);
    expect(k.kho.stats.preservedFolios).toBe(folios + 3);
    expect(errnoOf(() => k.iommu.unpreserveDevice(NIC))).toBe('ENOENT');
    k.iommu.unpreserveDevice(COPY);
    expect(k.kho.stats.preservedFolios).toBe(folios);
    k.iommu.unpreserveDomain(domain);
    expect(k.kho.stats.preservedFolios).toBe(0);
    k.iommu.detachDevice(NIC);
  });

  it('refuses to preserve without KHO', () => {
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
    const iommu = new IommuDriver(
      memory,
      pages,
      new IommuRegisters(IommuRegisters.allocate(), []),
      log,
    );
    expect(errnoOf(() => iommu.preserveDomain(iommu.allocDomain()))).toBe('EINVAL');
  });

  it('refuses a handover whose tables disagree with RAM or were not preserved', () => {
    const k1 = coldBoot();
    const { domain } = preservedNic(k1);
    const fdt = k1.kho.finalize();
    k1.iommu.shutdown();
    // The domain's root frame is listed but its context entry now points elsewhere.
    const entry = k1.regs.rootTable; // bus 0's root entry → context table
    const contextTable = Number(k1.memory.readU64(entry) & ~0xfffn);
    k1.memory.writeU32(contextTable + (NIC & 0xff) * 16, (domain.pageTableRoot + PAGE_SIZE) | 1);
    expect(() => boot(k1.memory, k1.registers, fdt)).toThrow(
      /context entry of 0000:00:03.0 does not point at domain/,
    );
  });
});

describe('a damaged IOMMU handover', () => {
  /** A preserved NIC, then the kexec up to the handover: KHO finalized, the IOMMU shut down. */
  function handedOver() {
    const k1 = coldBoot();
    const nic = preservedNic(k1);
    const fdt = k1.kho.finalize()!;
    k1.iommu.shutdown();
    return { k1, fdt, ...nic };
  }
  /** The level-`level` table on the walk of IOVA (every index on that walk is 0). */
  const tableOnWalk = (memory: PhysicalMemory, root: number, level: number): number => {
    let table = root;
    for (let l = 4; l > level; l--) table = Number(memory.readU64(table) & ~0xfffn);
    return table;
  };

  it('is not taken for a cold start when the iommu name is damaged: translation was left on', () => {
    const { k1, fdt } = handedOver();
    const rootTable = k1.regs.rootTable;
    damageKhoSubtreeName(k1.memory, fdt, IOMMU_LU_SUBTREE);
    expect(() => boot(k1.memory, k1.registers, fdt)).toThrow(
      new RegExp(
        `^translation is on with root table ${hex(rootTable)}, so the previous kernel kept devices translating, but there is no iommu subtree: the handover is damaged$`,
      ),
    );
    // Refused before touching the hardware: the NIC still translates through its tables.
    expect(k1.regs.translationEnabled).toBe(true);
    expect(k1.regs.rootTable).toBe(rootTable);
    expect(k1.translate(NIC, IOVA, true)).not.toHaveProperty('fault');
  });

  it('refuses a domain whose tables reach a frame it does not list', () => {
    const { k1, fdt, domain, data } = handedOver();
    // The level-3 table now points at the data page as if it were a level-2 table.
    const l3 = tableOnWalk(k1.memory, domain.pageTableRoot, 3);
    k1.memory.writeU32(l3, (data.pfn * PAGE_SIZE) | 3);
    expect(() => boot(k1.memory, k1.registers, fdt)).toThrow(
      new RegExp(
        `^domain ${domain.id}: level-3 table ${hex(l3)} entry 0 points at ${hex(data.pfn * PAGE_SIZE)}, which is not one of its 4 listed table frames$`,
      ),
    );
  });

  it('refuses a domain that lists a table frame its root does not reach', () => {
    const { k1, fdt, domain } = handedOver();
    const l2 = tableOnWalk(k1.memory, domain.pageTableRoot, 2);
    const l1 = Number(k1.memory.readU64(l2) & ~0xfffn);
    k1.memory.writeU64(l2, 0n);
    expect(() => boot(k1.memory, k1.registers, fdt)).toThrow(
      new RegExp(
        `^domain ${domain.id}: listed table frame ${hex(l1)} is not reached from its root ${hex(domain.pageTableRoot)}$`,
      ),
    );
  });
});

describe('IOMMU handover blob', () => {
  const state = {
    rootTable: 0x20_0000,
    contextTables: [{ bus: 0, phys: 0x20_1000 }],
    domains: [{ id: 3, pageTableRoot: 0x30_0000, tables: [0x30_0000, 0x30_1000] }],
    devices: [{ bdf: NIC, domainId: 3 }],
  };

  it('round-trips, with the documented offsets', () => {
    const bytes = encodeIommuHandover(state);
    expect(bytes.length).toBe(
      IOMMU_LU_HEADER_SIZE +
        IOMMU_LU_CONTEXT_SIZE +
        IOMMU_LU_DOMAIN_SIZE +
        IOMMU_LU_DEVICE_SIZE +
        16,
    );
    const view = new DataView(bytes.buffer);
    expect(new TextDecoder().decode(bytes.subarray(0, 19))).toBe('iommu-liveupdate-v1');
    expect(bytes[19]).toBe(0);
    expect(view.getBigUint64(32, true)).toBe(0x20_0000n);
    expect([40, 44, 48, 52].map((o) => view.getUint32(o, true))).toEqual([1, 1, 1, 2]);
    expect(view.getBigUint64(56, true)).toBe(0x20_1000n);
    expect(view.getUint16(64, true)).toBe(0);
    expect(view.getBigUint64(72, true)).toBe(0x30_0000n);
    expect(view.getUint32(80, true)).toBe(3);
    expect(view.getUint32(84, true)).toBe(2);
    expect(view.getUint16(88, true)).toBe(NIC);
    expect(view.getUint32(92, true)).toBe(3);
    expect(view.getBigUint64(104, true)).toBe(0x30_1000n);
    expect(decodeIommuHandover(bytes)).toEqual(state);
  });

  const corrupt: [string, (view: DataView) => void, RegExp][] = [
    ['another compatible', (v) => v.setUint8(18, 0x32), /compatible "iommu-liveupdate-v2"/],
    ['a count past the blob', (v) => v.setUint32(48, 9, true), /need \d+ bytes, the blob has 112/],
    ['an unaligned root', (v) => v.setBigUint64(32, 0x20_0010n, true), /root table 0x200010/],
    ['domain id 0', (v) => v.setUint32(80, 0, true), /id 0 is out of range/],
    [
      'devices without a root table',
      (v) => v.setBigUint64(32, 0n, true),
      /crosses with the devices/,
    ],
    ['a device on a missing domain', (v) => v.setUint32(92, 4, true), /domain 4, which is not/],
    ['a frame listed twice', (v) => v.setBigUint64(104, 0x20_1000n, true), /listed twice/],
    [
      'a non-zero reserved field',
      (v) => v.setUint16(90, 1, true),
      /^device 0 \(0000:00:03\.0\): reserved u16 is 0x1, not 0$/,
    ],
    ['a table frame at 0', (v) => v.setBigUint64(104, 0n, true), /^domain 3 table is 0$/],

    [
      'a first table that is not the root',
      (v) => v.setBigUint64(96, 0x31_0000n, true),
      /is not its root/,
    ],
  ];
  it.each(corrupt)('rejects %s', (_name, damage, reason) => {
    const bytes = encodeIommuHandover(state);
    damage(new DataView(bytes.buffer));
    expect(() => decodeIommuHandover(bytes)).toThrow(IommuHandoverError);
    expect(() => decodeIommuHandover(bytes)).toThrow(reason);
  });

  it('rejects a blob with no domain: it is written only while one is preserved', () => {
    const bytes = encodeIommuHandover({
      rootTable: 0,
      contextTables: [],
      domains: [],
      devices: [],
    });
    expect(() => decodeIommuHandover(bytes)).toThrow(/^nr_domains is 0/);
  });

  it('is published under the iommu subtree while something is preserved, and freed once read', () => {
    const k = coldBoot();
    const domain = k.iommu.allocDomain();
    k.iommu.preserveDomain(domain);
    k.iommu.attachDevice(domain, NIC);
    k.iommu.preserveDevice(NIC, domain);
    const next = boot(k.memory, k.registers, k.kho.finalize()!);
    expect(next.iommu.restoredDomainOf(NIC)).toEqual(domain);
    const blob = next.kho.retrieveSubtree(IOMMU_LU_SUBTREE);
    expect(next.pages.isAllocated(blob.phys / PAGE_SIZE, 0)).toBe(false);
    expect(isPoison(next.memory, blob.phys)).toBe(true);
  });

  it('is withdrawn when everything is unpreserved', () => {
    const k = coldBoot();
    const domain = k.iommu.allocDomain();
    k.iommu.attachDevice(domain, NIC);
    k.iommu.preserveDomain(domain);
    k.iommu.preserveDevice(NIC, domain);
    k.iommu.unpreserveDevice(NIC);
    k.iommu.unpreserveDomain(domain);
    expect(k.kho.stats.preservedFolios).toBe(0);
    const next = kexec(k);
    expect(errnoOf(() => next.kho.retrieveSubtree(IOMMU_LU_SUBTREE))).toBe('ENOENT');
    expect(next.iommu.restoredDomainOf(NIC)).toBeUndefined();
  });
});
