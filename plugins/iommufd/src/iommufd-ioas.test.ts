import { describe, expect, it } from 'vitest';
import { KernelError, PAGE_SIZE, type File, type IommuDomain } from '@liveupdate/kernel';
import type { MemfdInode } from '@liveupdate/plugin-memfd';
import { IommufdIoas, type IoasKernel } from './iommufd-ioas.js';
import { IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE } from './iommufd-uapi.js';

const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;

/**
 * Fakes of the page allocator, VFS and IOMMU driver that log every call, and an IOMMU whose
 * `map` fails once `failAfter` more calls have succeeded.
 */
function fakeKernel() {
  const log: string[] = [];
  const mapped = new Map<number, Set<number>>();
  const state = { failAfter: Infinity };
  const kernel = {
    pages: {
      pin: (folio: { pfn: number }) => log.push(`pin ${folio.pfn}`),
      unpin: (folio: { pfn: number }) => log.push(`unpin ${folio.pfn}`),
    },
    vfs: {
      fget: () => log.push('fget'),
      fput: () => {
        log.push('fput');
        return Promise.resolve();
      },
    },
    iommu: {
      map(domain: IommuDomain, iova: number, _phys: number, length: number) {
        if (state.failAfter-- <= 0) throw new KernelError('ENOMEM', 'no page-table frame');
        const pages = mapped.get(domain.id) ?? new Set<number>();
        for (let at = iova; at < iova + length; at += PAGE_SIZE) pages.add(at);
        mapped.set(domain.id, pages);
        log.push(`map ${domain.id} ${iova}+${length}`);
      },
      unmap(domain: IommuDomain, iova: number, length: number) {
        for (let at = iova; at < iova + length; at += PAGE_SIZE) mapped.get(domain.id)?.delete(at);
        log.push(`unmap ${domain.id} ${iova}+${length}`);
        return length;
      },
    },
  };
  return { kernel: kernel as unknown as IoasKernel, log, mapped, state };
}

/** A two-page memfd made of two order-0 folios that are not adjacent in RAM. */
const inode = {
  size: 2 * PAGE_SIZE,
  segments: () => [
    { phys: 0x10_000, length: PAGE_SIZE },
    { phys: 0x30_000, length: PAGE_SIZE },
  ],
  lookup: (page: number) => ({ index: page, folio: { pfn: page === 0 ? 0x10 : 0x30, order: 0 } }),
} as unknown as MemfdInode;
const file = { path: 'memfd:test' } as File;
const domain = (id: number): IommuDomain => ({ id, pageTableRoot: id * PAGE_SIZE });
const request = { file, inode, start: 0, length: 2 * PAGE_SIZE, iova: 0x100_000, prot: RW };

describe('IommufdIoas with IOMMU domains', () => {
  it('maps a new area into every domain, one IOMMU mapping per segment', () => {
    const { kernel, mapped, log } = fakeKernel();
    const ioas = new IommufdIoas(1, kernel);
    ioas.addDomain(domain(1));
    ioas.addDomain(domain(2));
    ioas.mapFile(request);
    expect([...mapped.get(1)!]).toEqual([0x100_000, 0x101_000]);
    expect([...mapped.get(2)!]).toEqual([0x100_000, 0x101_000]);
    expect(log.filter((line) => line.startsWith('map'))).toHaveLength(4);
    expect(ioas.users).toBe(2);
  });

  it('maps nothing and pins nothing when a later domain refuses the area', () => {
    for (const failAfter of [0, 1, 2, 3]) {
      const { kernel, mapped, log, state } = fakeKernel();
      const ioas = new IommufdIoas(1, kernel);
      ioas.addDomain(domain(1));
      ioas.addDomain(domain(2));
      state.failAfter = failAfter;
      expect(() => ioas.mapFile(request)).toThrow(/no page-table frame/);
      expect({ failAfter, d1: mapped.get(1)?.size ?? 0, d2: mapped.get(2)?.size ?? 0 }).toEqual({
        failAfter,
        d1: 0,
        d2: 0,
      });
      const pins = log.filter((line) => line.startsWith('pin')).length;
      expect(log.filter((line) => line.startsWith('unpin'))).toHaveLength(pins);
      expect(log).not.toContain('fget');
      expect(ioas.areas).toEqual([]);
    }
  });

  it('fills a domain added later with the areas, or leaves it empty and unused on failure', () => {
    const { kernel, mapped, state } = fakeKernel();
    const ioas = new IommufdIoas(1, kernel);
    ioas.mapFile(request);
    state.failAfter = 1;
    expect(() => ioas.addDomain(domain(3))).toThrow(/no page-table frame/);
    expect(mapped.get(3)?.size ?? 0).toBe(0);
    expect(ioas.users).toBe(0);
    state.failAfter = Infinity;
    ioas.addDomain(domain(3));
    expect(mapped.get(3)?.size).toBe(2);
    ioas.removeDomain(domain(3));
    expect(mapped.get(3)?.size).toBe(0);
    expect(ioas.users).toBe(0);
  });

  it('unmaps an area from every domain before it drops a pin or the file', async () => {
    const { kernel, log } = fakeKernel();
    const ioas = new IommufdIoas(1, kernel);
    ioas.addDomain(domain(1));
    ioas.addDomain(domain(2));
    ioas.mapFile(request);
    log.length = 0;
    expect(await ioas.unmapAll()).toBe(2 * PAGE_SIZE);
    expect(log).toEqual([
      'unmap 1 1048576+8192',
      'unmap 2 1048576+8192',
      'unpin 16',
      'unpin 48',
      'fput',
    ]);
  });
});
