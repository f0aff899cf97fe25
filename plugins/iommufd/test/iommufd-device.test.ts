import { describe, expect, it } from 'vitest';
import { bootForLiveUpdate } from '@liveupdate/testkit';
import { IOMMU_IOAS_MAP_READABLE, IommufdDevice } from '../src/index.js';
import { KiB, MiB, RW, bootHarness, errnoOf, memfdOf, testkitStats } from './helpers.js';

const PAGE = 4 * KiB;

describe('IommufdDevice', () => {
  it('maps, lists and unmaps through the typed client', async () => {
    const { process } = await bootHarness();
    const before = await testkitStats(process);
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    expect(await iommufd.iovaRanges(ioas)).toEqual([{ start: 0, last: 2 ** 48 - 1 }]);
    const memfd = await memfdOf(process, MiB, 1);
    expect(await iommufd.mapFile(ioas, { fd: memfd, length: MiB, iova: 8 * MiB })).toBe(8 * MiB);
    expect(
      await iommufd.mapFile(ioas, {
        fd: memfd,
        start: PAGE,
        length: PAGE,
        prot: IOMMU_IOAS_MAP_READABLE,
      }),
    ).toBe(0);
    expect(await iommufd.mappings(ioas)).toEqual([
      { iova: 0, length: PAGE, start: PAGE, prot: IOMMU_IOAS_MAP_READABLE },
      { iova: 8 * MiB, length: MiB, start: 0, prot: RW },
    ]);
    expect(await iommufd.unmap(ioas, 8 * MiB, MiB)).toBe(MiB);
    expect(await iommufd.unmap(ioas)).toBe(PAGE);
    await iommufd.destroy(ioas);
    expect(await errnoOf(iommufd.mappings(ioas))).toBe('ENOENT');
    await iommufd.close();
    await process.close(memfd);
    expect(await testkitStats(process)).toEqual(before);
  });

  it('lists more mappings than its first guess has room for', async () => {
    const { process } = await bootHarness();
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    const memfd = await memfdOf(process, 64 * PAGE, 1);
    for (let i = 0; i < 20; i++) {
      await iommufd.mapFile(ioas, { fd: memfd, start: i * PAGE, length: PAGE, iova: 2 * i * PAGE });
    }
    const list = await iommufd.mappings(ioas);
    expect(list).toHaveLength(20);
    expect(list[19]).toEqual({ iova: 38 * PAGE, length: PAGE, start: 19 * PAGE, prot: RW });
  });

  it('closes the iommufd with mappings first, then the memfd, leaving nothing behind', async () => {
    const { process } = await bootHarness();
    const before = await testkitStats(process);
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    const memfd = await memfdOf(process, 2 * MiB, 7);
    await iommufd.mapFile(ioas, { fd: memfd, length: 2 * MiB });
    await iommufd.close();
    const closed = await testkitStats(process);
    expect(closed.pinnedFrames).toBe(before.pinnedFrames);
    expect(closed.framesAllocated).toBeGreaterThan(before.framesAllocated);
    expect(await process.pread(memfd, 2, 2 * MiB - 2)).toEqual(new Uint8Array([7, 7]));
    await process.close(memfd);
    expect(await testkitStats(process)).toEqual(before);
  });

  it('refuses every file with EINVAL when the memfd module is not loaded', async () => {
    const harness = await bootForLiveUpdate({
      modules: ['@liveupdate/plugin-iommufd'],
      moduleBase: import.meta.url,
    });
    try {
      const iommufd = await IommufdDevice.open(harness.process);
      const ioas = await iommufd.allocIoas();
      expect(await errnoOf(iommufd.mapFile(ioas, { fd: iommufd.fd, length: PAGE }))).toBe('EINVAL');
    } finally {
      await harness.shutdown();
    }
  });
});
