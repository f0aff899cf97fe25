import { describe, expect, it } from 'vitest';
import { DMA_COPY_STATUS, type MemoryMapping } from '@liveupdate/machine';
import { IOMMU_IOAS_MAP_READABLE, IommufdDevice } from '../src/index.js';
import { errnoOf, mapFile, testkitStats, unmap } from './helpers.js';
import {
  COPY_ENGINE,
  NIC,
  PAGE,
  TestDevice,
  bootWithDevices,
  guestRing,
  pattern,
} from './hwpt-helpers.js';

const BASE = 0x40_0000;
const SRC = BASE + 2 * PAGE;
const DST = BASE + 4 * PAGE;
const DATA = 0x80_0000;
const LEN = 256;
const OK = { status: DMA_COPY_STATUS.SUCCESS, copied: LEN };
const FAULT = { status: DMA_COPY_STATUS.FAULT, copied: 0 };

/** The physical address of byte `offset` of an mmap. */
function physOf(mapping: MemoryMapping, offset: number): number {
  const segment = mapping.segments.find(
    (s) => s.offset <= offset && offset < s.offset + s.bytes.length,
  );
  if (!segment) throw new Error(`offset ${offset} is not mapped`);
  return segment.phys + offset - segment.offset;
}

describe('devices attached to an IOAS', () => {
  it('translate their IOVAs to the memfd frames, so the copy engine copies inside the memfd', async () => {
    const { process } = await bootWithDevices();
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    const ring = await guestRing(process, iommufd.fd, ioas, BASE);
    const dev = await TestDevice.open(process);
    const { domains } = await dev.state();
    expect(await dev.bind(iommufd.fd, COPY_ENGINE)).toBe(2);
    const hwpt = await dev.attach(ioas);
    expect(hwpt).toBe(3);
    const state = await dev.state();
    expect(state).toMatchObject({ devId: 2, hwptId: hwpt, domains: domains + 1 });
    expect(state.domainId).not.toBe(0);

    const mapping = await process.mmap(ring.memfd, 16 * PAGE);
    expect(await dev.iovaToPhys(SRC + 5)).toBe(physOf(mapping, 2 * PAGE + 5));
    expect(await dev.iovaToPhys(BASE + 15 * PAGE)).toBe(physOf(mapping, 15 * PAGE));
    expect(await dev.iovaToPhys(BASE + 16 * PAGE)).toBeNull();

    await process.pwrite(ring.memfd, pattern(LEN, 1), 2 * PAGE);
    expect(await dev.copy(ring, SRC, DST, LEN)).toEqual(OK);
    expect(await process.pread(ring.memfd, LEN, 4 * PAGE)).toEqual(pattern(LEN, 1));
  });

  it('reach a mapping made after the attach, and lose it the moment it is unmapped', async () => {
    const { process } = await bootWithDevices();
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    const dev = await TestDevice.open(process);
    await dev.bind(iommufd.fd, COPY_ENGINE);
    await dev.attach(ioas);
    expect(await dev.iovaToPhys(BASE)).toBeNull();

    const ring = await guestRing(process, iommufd.fd, ioas, BASE);
    const data = await process.memfdCreate('data');
    await process.ftruncate(data, PAGE);
    const pinnedBefore = (await testkitStats(process)).pinnedFrames;
    await mapFile(process, iommufd.fd, { ioasId: ioas, fd: data, length: PAGE, iova: DATA });
    expect((await testkitStats(process)).pinnedFrames).toBe(pinnedBefore + 1);
    await process.pwrite(ring.memfd, pattern(LEN, 1), 2 * PAGE);
    expect(await dev.copy(ring, SRC, DATA, LEN)).toEqual(OK);
    expect(await process.pread(data, LEN, 0)).toEqual(pattern(LEN, 1));

    expect(await unmap(process, iommufd.fd, ioas, DATA, PAGE)).toBe(PAGE);
    expect(await dev.iovaToPhys(DATA)).toBeNull();
    expect((await testkitStats(process)).pinnedFrames).toBe(pinnedBefore);
    await process.pwrite(ring.memfd, pattern(LEN, 2), 2 * PAGE);
    expect(await dev.copy(ring, SRC, DATA, LEN)).toEqual(FAULT);
    expect(await process.pread(data, LEN, 0)).toEqual(pattern(LEN, 1));
  });

  it('may only read a mapping made READABLE', async () => {
    const { process } = await bootWithDevices();
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    const ring = await guestRing(process, iommufd.fd, ioas, BASE);
    const data = await process.memfdCreate('data');
    await process.ftruncate(data, PAGE);
    await process.pwrite(data, pattern(LEN, 9), 0);
    await iommufd.mapFile(ioas, {
      fd: data,
      length: PAGE,
      iova: DATA,
      prot: IOMMU_IOAS_MAP_READABLE,
    });
    const dev = await TestDevice.open(process);
    await dev.bind(iommufd.fd, COPY_ENGINE);
    await dev.attach(ioas);

    expect(await dev.copy(ring, DATA, DST, LEN)).toEqual(OK);
    expect(await process.pread(ring.memfd, LEN, 4 * PAGE)).toEqual(pattern(LEN, 9));
    await process.pwrite(ring.memfd, pattern(LEN, 3), 2 * PAGE);
    expect(await dev.copy(ring, SRC, DATA, LEN)).toEqual(FAULT);
    expect(await process.pread(data, LEN, 0)).toEqual(pattern(LEN, 9));
  });

  it('share one auto domain per IOAS, which goes with its last device', async () => {
    const { process } = await bootWithDevices();
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    const ring = await guestRing(process, iommufd.fd, ioas, BASE);
    const copier = await TestDevice.open(process);
    const nic = await TestDevice.open(process);
    const { domains } = await copier.state();
    await copier.bind(iommufd.fd, COPY_ENGINE);
    await nic.bind(iommufd.fd, NIC);
    const hwpt = await copier.attach(ioas);
    expect(await nic.attach(ioas)).toBe(hwpt);
    expect(await copier.attach(ioas)).toBe(hwpt);
    const [copierState, nicState] = [await copier.state(), await nic.state()];
    expect(nicState.domainId).toBe(copierState.domainId);
    expect(nicState.domains).toBe(domains + 1);
    expect(await errnoOf(iommufd.destroy(hwpt))).toBe('EBUSY');
    expect(await errnoOf(iommufd.destroy(ioas))).toBe('EBUSY');

    await copier.detach();
    expect((await copier.state()).hwptId).toBe(0);
    expect(await copier.iovaToPhys(BASE)).toBeNull();
    expect((await nic.state()).domains).toBe(domains + 1);
    expect(await nic.iovaToPhys(BASE)).not.toBeNull();
    expect(await errnoOf(iommufd.destroy(hwpt))).toBe('EBUSY');

    await nic.detach();
    await nic.detach();
    expect((await nic.state()).domains).toBe(domains);
    expect(await errnoOf(iommufd.destroy(hwpt))).toBe('ENOENT');
    await copier.attach(ioas);
    await process.pwrite(ring.memfd, pattern(LEN, 4), 2 * PAGE);
    expect(await copier.copy(ring, SRC, DST, LEN)).toEqual(OK);
    await copier.detach();
    await iommufd.destroy(ioas);
    expect((await nic.state()).domains).toBe(domains);
  });
});

describe('IOMMU_HWPT_ALLOC', () => {
  it('makes a HWPT that maps what its IOAS maps and stays when its devices leave', async () => {
    const { process } = await bootWithDevices();
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    const ring = await guestRing(process, iommufd.fd, ioas, BASE);
    const dev = await TestDevice.open(process);
    const { domains } = await dev.state();
    const devId = await dev.bind(iommufd.fd, COPY_ENGINE);
    const hwpt = await iommufd.hwptAlloc(devId, ioas);
    expect((await dev.state()).domains).toBe(domains + 1);
    expect(await errnoOf(iommufd.destroy(ioas))).toBe('EBUSY');

    expect(await dev.attach(hwpt)).toBe(hwpt);
    await process.pwrite(ring.memfd, pattern(LEN, 5), 2 * PAGE);
    expect(await dev.copy(ring, SRC, DST, LEN)).toEqual(OK);
    expect(await process.pread(ring.memfd, LEN, 4 * PAGE)).toEqual(pattern(LEN, 5));
    expect(await errnoOf(iommufd.destroy(hwpt))).toBe('EBUSY');
    expect(await errnoOf(iommufd.destroy(devId))).toBe('EBUSY');

    await dev.detach();
    expect((await dev.state()).domains).toBe(domains + 1);
    await iommufd.destroy(hwpt);
    expect((await dev.state()).domains).toBe(domains);
    expect(await errnoOf(dev.attach(hwpt))).toBe('ENOENT');
    await iommufd.destroy(ioas);
  });

  it('gives a HWPT that a replace moves a running device onto, switching its translation', async () => {
    const { process } = await bootWithDevices();
    const iommufd = await IommufdDevice.open(process);
    const ioasA = await iommufd.allocIoas();
    const ioasB = await iommufd.allocIoas();
    const ringA = await guestRing(process, iommufd.fd, ioasA, BASE);
    const ringB = await guestRing(process, iommufd.fd, ioasB, BASE);
    const dev = await TestDevice.open(process);
    const { domains } = await dev.state();
    const devId = await dev.bind(iommufd.fd, COPY_ENGINE);
    const hwptB = await iommufd.hwptAlloc(devId, ioasB);
    const autoA = await dev.attach(ioasA);
    expect((await dev.state()).domains).toBe(domains + 2);
    await process.pwrite(ringA.memfd, pattern(LEN, 6), 2 * PAGE);
    await process.pwrite(ringB.memfd, pattern(LEN, 7), 2 * PAGE);
    expect(await dev.copy(ringA, SRC, DST, LEN, [ringB.memfd])).toEqual(OK);
    expect(await process.pread(ringA.memfd, LEN, 4 * PAGE)).toEqual(pattern(LEN, 6));
    expect(await process.pread(ringB.memfd, LEN, 4 * PAGE)).toEqual(new Uint8Array(LEN));

    expect(await dev.attach(hwptB)).toBe(hwptB);
    expect((await dev.state()).domains).toBe(domains + 1);
    expect(await errnoOf(iommufd.destroy(autoA))).toBe('ENOENT');
    await process.pwrite(ringA.memfd, pattern(LEN, 8), 2 * PAGE);
    expect(await dev.copy(ringB, SRC, DST, LEN, [ringA.memfd])).toEqual(OK);
    expect(await process.pread(ringB.memfd, LEN, 4 * PAGE)).toEqual(pattern(LEN, 7));
    expect(await process.pread(ringA.memfd, LEN, 4 * PAGE)).toEqual(pattern(LEN, 6));

    // And back, onto a new auto domain of A: the running engine follows again.
    await dev.attach(ioasA);
    expect(await dev.copy(ringA, SRC, DST, LEN, [ringB.memfd])).toEqual(OK);
    expect(await process.pread(ringA.memfd, LEN, 4 * PAGE)).toEqual(pattern(LEN, 8));
    expect((await dev.state()).domains).toBe(domains + 2);
  });
});
