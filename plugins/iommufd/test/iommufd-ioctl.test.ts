import { describe, expect, it } from 'vitest';
import { O_RDWR } from '@liveupdate/machine';
import {
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAPPINGS,
  IOMMU_IOAS_MAP_FILE,
  IOMMU_IOAS_UNMAP,
  iommuDestroy,
  iommuIoasAlloc,
  iommuIoasIovaRanges,
  iommuIoasMapFile,
  iommuIoasMappings,
  iommuIoasUnmap,
  iommuIovaRange,
} from '../src/index.js';
import { argOf, bootIommufd, destroy, errnoOf, ioasAlloc } from './helpers.js';

describe('/dev/iommu ioctl argument rules', () => {
  it('refuses an argument whose size is smaller than the struct with EINVAL', async () => {
    const process = await bootIommufd();
    const fd = await process.open('/dev/iommu', O_RDWR);
    const arg = argOf(iommuIoasAlloc, { flags: 0, out_ioas_id: 0 });
    new DataView(arg.buffer).setUint32(0, 8, true);
    expect(await errnoOf(process.ioctl(fd, IOMMU_IOAS_ALLOC, arg))).toBe('EINVAL');
  });

  it('refuses a larger argument with a non-zero tail with E2BIG and accepts a zero tail', async () => {
    const process = await bootIommufd();
    const fd = await process.open('/dev/iommu', O_RDWR);
    const arg = new Uint8Array(16);
    const view = new DataView(arg.buffer);
    view.setUint32(0, 16, true);
    arg[14] = 1;
    expect(await errnoOf(process.ioctl(fd, IOMMU_IOAS_ALLOC, arg))).toBe('E2BIG');
    arg[14] = 0;
    await process.ioctl(fd, IOMMU_IOAS_ALLOC, arg);
    expect(view.getUint32(8, true)).toBe(1);
  });

  it('applies the size rules to every command', async () => {
    const process = await bootIommufd();
    const fd = await process.open('/dev/iommu', O_RDWR);
    const commands = [
      [IOMMU_DESTROY, iommuDestroy.size],
      [IOMMU_IOAS_ALLOC, iommuIoasAlloc.size],
      [IOMMU_IOAS_IOVA_RANGES, iommuIoasIovaRanges.size],
      [IOMMU_IOAS_MAP_FILE, iommuIoasMapFile.size],
      [IOMMU_IOAS_UNMAP, iommuIoasUnmap.size],
      [IOMMU_IOAS_MAPPINGS, iommuIoasMappings.size],
    ] as const;
    for (const [cmd, size] of commands) {
      const arg = new Uint8Array(size + 8);
      const view = new DataView(arg.buffer);
      view.setUint32(0, size - 4, true);
      expect(await errnoOf(process.ioctl(fd, cmd, arg)), `${cmd.toString(16)} smaller`).toBe(
        'EINVAL',
      );
      view.setUint32(0, size + 8, true);
      arg[size + 3] = 1;
      expect(await errnoOf(process.ioctl(fd, cmd, arg)), `${cmd.toString(16)} larger`).toBe(
        'E2BIG',
      );
      // copy_struct_from_user reads the extra bytes in order: a non-zero one before the end of
      // the buffer is E2BIG, so only a zero tail reaches the fault.
      arg[size + 3] = 0;
      view.setUint32(0, size + 16, true);
      expect(
        await errnoOf(process.ioctl(fd, cmd, arg)),
        `${cmd.toString(16)} past the buffer`,
      ).toBe('EFAULT');
    }
  });

  it('refuses a missing argument with EFAULT', async () => {
    const process = await bootIommufd();
    const fd = await process.open('/dev/iommu', O_RDWR);
    expect(await errnoOf(process.ioctl(fd, IOMMU_IOAS_ALLOC))).toBe('EFAULT');
  });

  it('answers an unknown or not yet implemented command with ENOTTY', async () => {
    const process = await bootIommufd();
    const fd = await process.open('/dev/iommu', O_RDWR);
    const arg = new Uint8Array(64);
    new DataView(arg.buffer).setUint32(0, 64, true);
    for (const cmd of [0x3b8b, 0x3b8a, 0x3b7f, 0x3bff, 0xba00]) {
      expect(await errnoOf(process.ioctl(fd, cmd, arg)), `ioctl ${cmd.toString(16)}`).toBe(
        'ENOTTY',
      );
    }
  });

  it('refuses IOAS flags with EOPNOTSUPP', async () => {
    const process = await bootIommufd();
    const fd = await process.open('/dev/iommu', O_RDWR);
    const arg = argOf(iommuIoasAlloc, { flags: 1, out_ioas_id: 0 });
    expect(await errnoOf(process.ioctl(fd, IOMMU_IOAS_ALLOC, arg))).toBe('EOPNOTSUPP');
  });
});

describe('iommufd objects', () => {
  it('numbers objects from 1 in each open of /dev/iommu', async () => {
    const process = await bootIommufd();
    const a = await process.open('/dev/iommu', O_RDWR);
    const b = await process.open('/dev/iommu', O_RDWR);
    expect(await ioasAlloc(process, a)).toBe(1);
    expect(await ioasAlloc(process, a)).toBe(2);
    expect(await ioasAlloc(process, b)).toBe(1);
  });

  it('reuses the lowest free id after a destroy', async () => {
    const process = await bootIommufd();
    const fd = await process.open('/dev/iommu', O_RDWR);
    await ioasAlloc(process, fd);
    await ioasAlloc(process, fd);
    await ioasAlloc(process, fd);
    await destroy(process, fd, 2);
    expect(await ioasAlloc(process, fd)).toBe(2);
    expect(await ioasAlloc(process, fd)).toBe(4);
  });

  it('destroys an unknown or already destroyed id with ENOENT', async () => {
    const process = await bootIommufd();
    const fd = await process.open('/dev/iommu', O_RDWR);
    expect(await errnoOf(destroy(process, fd, 1))).toBe('ENOENT');
    const id = await ioasAlloc(process, fd);
    await destroy(process, fd, id);
    expect(await errnoOf(destroy(process, fd, id))).toBe('ENOENT');
  });

  it("reports one allowed IOVA range, the IOMMU's 48 bits, with page alignment", async () => {
    const process = await bootIommufd();
    const fd = await process.open('/dev/iommu', O_RDWR);
    const id = await ioasAlloc(process, fd);
    const arg = new Uint8Array(iommuIoasIovaRanges.size + 2 * iommuIovaRange.size);
    const query = {
      size: iommuIoasIovaRanges.size,
      ioas_id: id,
      num_iovas: 2,
      __reserved: 0,
      allowed_iovas: BigInt(iommuIoasIovaRanges.size),
      out_iova_alignment: 0n,
    };
    iommuIoasIovaRanges.encodeInto(arg, 0, query);
    await process.ioctl(fd, IOMMU_IOAS_IOVA_RANGES, arg);
    const out = iommuIoasIovaRanges.decode(arg);
    expect(out.num_iovas).toBe(1);
    expect(out.out_iova_alignment).toBe(4096n);
    expect(iommuIovaRange.decode(arg, iommuIoasIovaRanges.size)).toEqual({
      start: 0n,
      last: 2n ** 48n - 1n,
    });
  });

  it('refuses an IOVA ranges query without room (EMSGSIZE), off the buffer (EFAULT) or for an unknown IOAS (ENOENT)', async () => {
    const process = await bootIommufd();
    const fd = await process.open('/dev/iommu', O_RDWR);
    const id = await ioasAlloc(process, fd);
    const query = (ioasId: number, num: number, at: number): Promise<number> =>
      process.ioctl(
        fd,
        IOMMU_IOAS_IOVA_RANGES,
        iommuIoasIovaRanges.encode({
          size: iommuIoasIovaRanges.size,
          ioas_id: ioasId,
          num_iovas: num,
          __reserved: 0,
          allowed_iovas: BigInt(at),
          out_iova_alignment: 0n,
        }),
      );
    expect(await errnoOf(query(id, 0, 0))).toBe('EMSGSIZE');
    expect(await errnoOf(query(id, 1, 32))).toBe('EFAULT');
    expect(await errnoOf(query(id + 1, 1, 32))).toBe('ENOENT');
  });
});
