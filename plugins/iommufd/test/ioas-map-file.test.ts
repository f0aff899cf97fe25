import { describe, expect, it } from 'vitest';
import { O_RDWR } from '@liveupdate/machine';
import { IOMMU_IOAS_MAP_FIXED_IOVA, IOMMU_IOAS_MAP_READABLE } from '../src/index.js';
import {
  FIXED_RW,
  KiB,
  MiB,
  RW,
  bootHarness,
  destroy,
  errnoOf,
  ioasAlloc,
  mapFile,
  mappings,
  memfdOf,
  testkitStats,
  unmap,
} from './helpers.js';

const PAGE = 4 * KiB;

/** A process with an iommufd, one IOAS and a 2 MiB memfd (one order-9 folio once written). */
async function setup(options: { holes?: boolean } = {}) {
  const harness = await bootHarness();
  const { process } = harness;
  const before = await testkitStats(process);
  const iommufd = await process.open('/dev/iommu', O_RDWR);
  const ioasId = await ioasAlloc(process, iommufd);
  const memfd = await memfdOf(process, 2 * MiB, options.holes ? undefined : 0x5a);
  return { harness, process, before, iommufd, ioasId, memfd };
}

describe('IOMMU_IOAS_MAP_FILE', () => {
  it('maps a memfd at a fixed IOVA and pins its folios until the unmap', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    const mapped = await testkitStats(process);
    const iova = await mapFile(process, iommufd, {
      ioasId,
      fd: memfd,
      length: 2 * MiB,
      iova: 4 * MiB,
    });
    expect(iova).toBe(4 * MiB);
    const after = await testkitStats(process);
    expect(after.pinnedFrames - mapped.pinnedFrames).toBe(512);
    expect(after.framesAllocated).toBe(mapped.framesAllocated);
    expect(await mappings(process, iommufd, ioasId)).toEqual([
      { iova: 4 * MiB, length: 2 * MiB, start: 0, flags: RW },
    ]);
    expect(await unmap(process, iommufd, ioasId, 4 * MiB, 2 * MiB)).toBe(2 * MiB);
    expect((await testkitStats(process)).pinnedFrames).toBe(mapped.pinnedFrames);
    expect(await mappings(process, iommufd, ioasId)).toEqual([]);
  });

  it('allocates the holes of an unwritten range and pins them', async () => {
    const { process, iommufd, ioasId, memfd } = await setup({ holes: true });
    const empty = await testkitStats(process);
    await mapFile(process, iommufd, {
      ioasId,
      fd: memfd,
      start: 64 * KiB,
      length: 64 * KiB,
      iova: 0,
    });
    const after = await testkitStats(process);
    expect(after.framesAllocated - empty.framesAllocated).toBe(
      after.pinnedFrames - empty.pinnedFrames,
    );
    expect(after.pinnedFrames - empty.pinnedFrames).toBeGreaterThanOrEqual(16);
  });

  it('pins a folio once per mapping and keeps it pinned while any mapping holds it', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    const base = (await testkitStats(process)).pinnedFrames;
    await mapFile(process, iommufd, { ioasId, fd: memfd, start: 0, length: PAGE, iova: 0 });
    await mapFile(process, iommufd, { ioasId, fd: memfd, start: PAGE, length: PAGE, iova: PAGE });
    expect((await testkitStats(process)).pinnedFrames - base).toBe(512);
    await unmap(process, iommufd, ioasId, 0, PAGE);
    expect((await testkitStats(process)).pinnedFrames - base).toBe(512);
    await unmap(process, iommufd, ioasId, PAGE, PAGE);
    expect((await testkitStats(process)).pinnedFrames).toBe(base);
  });

  it('lets the kernel choose a free, aligned IOVA when FIXED_IOVA is clear', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    expect(await mapFile(process, iommufd, { ioasId, fd: memfd, length: MiB, flags: RW })).toBe(0);
    expect(await mapFile(process, iommufd, { ioasId, fd: memfd, length: 2 * MiB, flags: RW })).toBe(
      2 * MiB,
    );
    expect(await mapFile(process, iommufd, { ioasId, fd: memfd, length: PAGE, flags: RW })).toBe(
      MiB,
    );
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: PAGE, iova: MiB + 2 * PAGE });
    expect(
      await mapFile(process, iommufd, { ioasId, fd: memfd, length: 2 * PAGE, flags: RW }),
    ).toBe(MiB + 4 * PAGE);
    const list = await mappings(process, iommufd, ioasId);
    expect(list.map((m) => m.iova)).toEqual([0, MiB, MiB + 2 * PAGE, MiB + 4 * PAGE, 2 * MiB]);
  });

  it('records the READABLE and WRITEABLE flags of each mapping', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    await mapFile(process, iommufd, {
      ioasId,
      fd: memfd,
      length: PAGE,
      flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE,
    });
    expect((await mappings(process, iommufd, ioasId))[0]!.flags).toBe(IOMMU_IOAS_MAP_READABLE);
  });

  it('refuses an IOVA range that overlaps a mapping with EEXIST', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: 4 * PAGE, iova: 8 * PAGE });
    for (const iova of [8 * PAGE, 5 * PAGE, 11 * PAGE, 9 * PAGE]) {
      expect(
        await errnoOf(mapFile(process, iommufd, { ioasId, fd: memfd, length: 4 * PAGE, iova })),
        `at page ${iova / PAGE}`,
      ).toBe('EEXIST');
    }
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: 4 * PAGE, iova: 4 * PAGE });
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: 4 * PAGE, iova: 12 * PAGE });
  });

  it('refuses unaligned, empty or out-of-range arguments with EINVAL', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    const cases = [
      { start: 1, length: PAGE, iova: 0 },
      { start: 0, length: PAGE + 1, iova: 0 },
      { start: 0, length: PAGE, iova: 512 },
      { start: 0, length: 0, iova: 0 },
      { start: 2 * MiB - PAGE, length: 2 * PAGE, iova: 0 },
      { start: 4 * MiB, length: PAGE, iova: 0 },
      { start: 0, length: PAGE, iova: 2 ** 48 },
      { start: 0, length: 2 * PAGE, iova: 2 ** 48 - PAGE },
    ];
    for (const c of cases) {
      expect(
        await errnoOf(mapFile(process, iommufd, { ioasId, fd: memfd, ...c })),
        JSON.stringify(c),
      ).toBe('EINVAL');
    }
    expect(await mappings(process, iommufd, ioasId)).toEqual([]);
  });

  it('refuses a mapping that is neither readable nor writeable with EINVAL, an unknown flag with EOPNOTSUPP', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    const map = (flags: number) =>
      mapFile(process, iommufd, { ioasId, fd: memfd, length: PAGE, flags });
    expect(await errnoOf(map(IOMMU_IOAS_MAP_FIXED_IOVA))).toBe('EINVAL');
    expect(await errnoOf(map(FIXED_RW | 8))).toBe('EOPNOTSUPP');
  });

  it('refuses a file that is not a memfd with EINVAL and a bad fd with EBADF', async () => {
    const { process, iommufd, ioasId } = await setup();
    const other = await process.open('/dev/iommu', O_RDWR);
    expect(await errnoOf(mapFile(process, iommufd, { ioasId, fd: other, length: PAGE }))).toBe(
      'EINVAL',
    );
    expect(await errnoOf(mapFile(process, iommufd, { ioasId, fd: iommufd, length: PAGE }))).toBe(
      'EINVAL',
    );
    expect(await errnoOf(mapFile(process, iommufd, { ioasId, fd: 99, length: PAGE }))).toBe(
      'EBADF',
    );
    expect(await errnoOf(mapFile(process, iommufd, { ioasId, fd: -1, length: PAGE }))).toBe(
      'EBADF',
    );
  });

  it('refuses an unknown or destroyed IOAS with ENOENT', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    expect(
      await errnoOf(mapFile(process, iommufd, { ioasId: ioasId + 1, fd: memfd, length: PAGE })),
    ).toBe('ENOENT');
    await destroy(process, iommufd, ioasId);
    expect(await errnoOf(mapFile(process, iommufd, { ioasId, fd: memfd, length: PAGE }))).toBe(
      'ENOENT',
    );
  });

  it('leaves nothing pinned or allocated after a refused mapping', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    const base = await testkitStats(process);
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: PAGE, iova: 0 });
    expect(
      await errnoOf(mapFile(process, iommufd, { ioasId, fd: memfd, length: PAGE, iova: 0 })),
    ).toBe('EEXIST');
    await unmap(process, iommufd, ioasId, 0, PAGE);
    expect(await testkitStats(process)).toEqual(base);
  });
});

describe('IOMMU_IOAS_UNMAP', () => {
  it('unmaps every mapping inside the range and returns the bytes unmapped', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: PAGE, iova: 0 });
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: 2 * PAGE, iova: 4 * PAGE });
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: PAGE, iova: 16 * PAGE });
    expect(await unmap(process, iommufd, ioasId, 0, 8 * PAGE)).toBe(3 * PAGE);
    expect((await mappings(process, iommufd, ioasId)).map((m) => m.iova)).toEqual([16 * PAGE]);
  });

  it('refuses a range with nothing mapped, or one that would split a mapping, with ENOENT', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    expect(await errnoOf(unmap(process, iommufd, ioasId, 0, PAGE))).toBe('ENOENT');
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: 4 * PAGE, iova: 4 * PAGE });
    expect(await errnoOf(unmap(process, iommufd, ioasId, 0, PAGE))).toBe('ENOENT');
    expect(await errnoOf(unmap(process, iommufd, ioasId, 4 * PAGE, PAGE))).toBe('ENOENT');
    expect(await errnoOf(unmap(process, iommufd, ioasId, 6 * PAGE, 4 * PAGE))).toBe('ENOENT');
    expect(await mappings(process, iommufd, ioasId)).toHaveLength(1);
    expect(await errnoOf(unmap(process, iommufd, ioasId + 1, 4 * PAGE, 4 * PAGE))).toBe('ENOENT');
  });

  it('refuses a zero length with EINVAL and a range that wraps with EOVERFLOW', async () => {
    const { process, iommufd, ioasId } = await setup();
    expect(await errnoOf(unmap(process, iommufd, ioasId, 0, 0))).toBe('EINVAL');
    expect(await errnoOf(unmap(process, iommufd, ioasId, PAGE, 2n ** 64n - 1n))).toBe('EOVERFLOW');
  });

  it('unmaps the whole IOAS with iova 0 and length U64_MAX, also when it is empty', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    const base = (await testkitStats(process)).pinnedFrames;
    expect(await unmap(process, iommufd, ioasId, 0, 2n ** 64n - 1n)).toBe(0);
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: MiB, flags: RW });
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: 2 * MiB, flags: RW });
    expect(await unmap(process, iommufd, ioasId, 0, 2n ** 64n - 1n)).toBe(3 * MiB);
    expect(await mappings(process, iommufd, ioasId)).toEqual([]);
    expect((await testkitStats(process)).pinnedFrames).toBe(base);
  });
});

describe('tearing down', () => {
  it('keeps the memfd alive after its fd is closed until the mapping goes', async () => {
    const { process, before, iommufd, ioasId, memfd } = await setup();
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: 2 * MiB, iova: 0 });
    const mapped = await testkitStats(process);
    await process.close(memfd);
    const closed = await testkitStats(process);
    expect(closed.framesAllocated).toBe(mapped.framesAllocated);
    expect(closed.pinnedFrames).toBe(mapped.pinnedFrames);
    expect(closed.openFiles).toBe(mapped.openFiles);
    expect(await unmap(process, iommufd, ioasId, 0, 2 * MiB)).toBe(2 * MiB);
    await process.close(iommufd);
    expect(await testkitStats(process)).toEqual(before);
  });

  it('unmaps, unpins and drops the memfd when the iommufd is closed with mappings', async () => {
    const { process, before, iommufd, ioasId, memfd } = await setup();
    const second = await ioasAlloc(process, iommufd);
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: 2 * MiB, iova: 0 });
    await mapFile(process, iommufd, { ioasId: second, fd: memfd, length: MiB, flags: RW });
    await process.close(memfd);
    await process.close(iommufd);
    expect(await testkitStats(process)).toEqual(before);
  });

  it('unmaps an IOAS that is destroyed with mappings', async () => {
    const { process, iommufd, ioasId, memfd } = await setup();
    const base = await testkitStats(process);
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: 2 * MiB, iova: 0 });
    await destroy(process, iommufd, ioasId);
    expect(await testkitStats(process)).toEqual(base);
  });

  it('releases everything when the process exits with mappings', async () => {
    const { harness, process, before, iommufd, ioasId, memfd } = await setup();
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: 2 * MiB, iova: 0 });
    await process.exit();
    const after = await testkitStats(harness.machine.spawn());
    expect(after).toEqual(before);
  });

  it('fails a truncate below a mapping with EBUSY, changing nothing, and leaks nothing once unmapped', async () => {
    const { process, before, iommufd, ioasId, memfd } = await setup();
    await process.pwrite(memfd, new Uint8Array([1, 2, 3]), MiB);
    await mapFile(process, iommufd, { ioasId, fd: memfd, length: 2 * MiB, iova: 0 });
    // The memfd checks for pins before it touches anything: size and bytes stay.
    expect(await errnoOf(process.ftruncate(memfd, 0))).toBe('EBUSY');
    expect(await errnoOf(process.fallocate(memfd, 3, 0, 4096))).toBe('EBUSY');
    expect(await process.lseek(memfd, 0, 2)).toBe(2 * MiB);
    expect([...(await process.pread(memfd, 3, MiB))]).toEqual([1, 2, 3]);
    expect(await unmap(process, iommufd, ioasId, 0, 2 * MiB)).toBe(2 * MiB);
    await process.close(memfd);
    await process.close(iommufd);
    expect(await testkitStats(process)).toEqual(before);
  });
});
