import { afterEach } from 'vitest';
import type { StructCodec } from '@liveupdate/core';
import type { Process } from '@liveupdate/machine';
import { bootForLiveUpdate, testkitStats, type LiveUpdateHarness } from '@liveupdate/testkit';
import {
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAPPINGS,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  iommuDestroy,
  iommuIoasAlloc,
  iommuIoasMapFile,
  iommuIoasMapping,
  iommuIoasMappings,
  iommuIoasUnmap,
} from '../src/index.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
export const FIXED_RW = IOMMU_IOAS_MAP_FIXED_IOVA | RW;

const harnesses: LiveUpdateHarness[] = [];
afterEach(async () => {
  await Promise.all(harnesses.splice(0).map((h) => h.shutdown()));
});

/** A kernel with LUO, the testkit module, memfd and iommufd; shut down after the test. */
export async function bootHarness(): Promise<LiveUpdateHarness> {
  const harness = await bootForLiveUpdate({
    modules: ['@liveupdate/plugin-memfd', '@liveupdate/plugin-iommufd'],
    moduleBase: import.meta.url,
  });
  harnesses.push(harness);
  return harness;
}

/** The first process of {@link bootHarness}. */
export async function bootIommufd(): Promise<Process> {
  return (await bootHarness()).process;
}

/** `value` encoded as `codec`, with `size` set to the struct's size. */
export function argOf<T extends { size: number }>(
  codec: StructCodec<T>,
  value: Omit<T, 'size'>,
): Uint8Array {
  return codec.encode({ ...value, size: codec.size } as T);
}

/** `IOMMU_IOAS_ALLOC`: the new IOAS's id. */
export async function ioasAlloc(process: Process, fd: number): Promise<number> {
  const arg = argOf(iommuIoasAlloc, { flags: 0, out_ioas_id: 0 });
  await process.ioctl(fd, IOMMU_IOAS_ALLOC, arg);
  return iommuIoasAlloc.decode(arg).out_ioas_id;
}

export interface MapFile {
  readonly ioasId: number;
  readonly fd: number;
  readonly start?: number;
  readonly length: number;
  /** With `FIXED_IOVA` in `flags`, where to map. */
  readonly iova?: number;
  readonly flags?: number;
}

/** `IOMMU_IOAS_MAP_FILE`: the IOVA of the new mapping. */
export async function mapFile(process: Process, fd: number, map: MapFile): Promise<number> {
  const arg = argOf(iommuIoasMapFile, {
    flags: map.flags ?? FIXED_RW,
    ioas_id: map.ioasId,
    fd: map.fd,
    start: BigInt(map.start ?? 0),
    length: BigInt(map.length),
    iova: BigInt(map.iova ?? 0),
  });
  await process.ioctl(fd, IOMMU_IOAS_MAP_FILE, arg);
  return Number(iommuIoasMapFile.decode(arg).iova);
}

/** `IOMMU_IOAS_UNMAP`: the number of bytes unmapped. */
export async function unmap(
  process: Process,
  fd: number,
  ioasId: number,
  iova: bigint | number,
  length: bigint | number,
): Promise<number> {
  const arg = argOf(iommuIoasUnmap, {
    ioas_id: ioasId,
    iova: BigInt(iova),
    length: BigInt(length),
  });
  await process.ioctl(fd, IOMMU_IOAS_UNMAP, arg);
  return Number(iommuIoasUnmap.decode(arg).length);
}

/** `IOMMU_DESTROY`. */
export async function destroy(process: Process, fd: number, id: number): Promise<void> {
  await process.ioctl(fd, IOMMU_DESTROY, argOf(iommuDestroy, { id }));
}

export interface Mapping {
  iova: number;
  length: number;
  start: number;
  flags: number;
}

/** `IOMMU_IOAS_MAPPINGS` with room for 16 entries. */
export async function mappings(process: Process, fd: number, ioasId: number): Promise<Mapping[]> {
  const room = 16;
  const arg = new Uint8Array(iommuIoasMappings.size + room * iommuIoasMapping.size);
  iommuIoasMappings.encodeInto(arg, 0, {
    size: iommuIoasMappings.size,
    ioas_id: ioasId,
    num_mappings: room,
    __reserved: 0,
    mappings: BigInt(iommuIoasMappings.size),
  });
  await process.ioctl(fd, IOMMU_IOAS_MAPPINGS, arg);
  const count = iommuIoasMappings.decode(arg).num_mappings;
  return Array.from({ length: count }, (_, i) => {
    const m = iommuIoasMapping.decode(arg, iommuIoasMappings.size + i * iommuIoasMapping.size);
    return {
      iova: Number(m.iova),
      length: Number(m.length),
      start: Number(m.start),
      flags: m.flags,
    };
  });
}

/** A memfd of `size` bytes, written full of `fill` when given (else all holes). */
export async function memfdOf(process: Process, size: number, fill?: number): Promise<number> {
  const fd = await process.memfdCreate('guest-ram');
  await process.ftruncate(fd, size);
  if (fill !== undefined) await process.pwrite(fd, new Uint8Array(size).fill(fill), 0);
  return fd;
}

export { testkitStats };

export { errnoOf } from '@liveupdate/testkit';
