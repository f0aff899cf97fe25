import { describe, expect, it } from 'vitest';
import { IommufdDevice } from '../src/index.js';
import { errnoOf, testkitStats } from './helpers.js';
import {
  COPY_ENGINE,
  NIC,
  TestDevice,
  bootWithDevices,
  guestRing,
  hwptAlloc,
  type HwptAllocFields,
} from './hwpt-helpers.js';

describe('iommufdDeviceBind', () => {
  it('refuses a file that is not an iommufd with EBADFD', async () => {
    const { process } = await bootWithDevices();
    const memfd = await process.memfdCreate('not-an-iommufd');
    const dev = await TestDevice.open(process);
    expect(await errnoOf(dev.bind(memfd, COPY_ENGINE))).toBe('EBADFD');
    expect(await errnoOf(dev.bind(dev.fd, COPY_ENGINE))).toBe('EBADFD');
  });

  it('refuses a device another binding owns with EBUSY, taking no file reference', async () => {
    const { process } = await bootWithDevices();
    const first = await IommufdDevice.open(process);
    const second = await IommufdDevice.open(process);
    const owner = await TestDevice.open(process);
    const other = await TestDevice.open(process);
    await owner.bind(first.fd, COPY_ENGINE);
    const files = (await testkitStats(process)).openFiles;
    expect(await errnoOf(other.bind(second.fd, COPY_ENGINE))).toBe('EBUSY');
    expect(await errnoOf(other.bind(first.fd, COPY_ENGINE))).toBe('EBUSY');
    expect((await testkitStats(process)).openFiles).toBe(files);
    expect(await other.bind(second.fd, NIC)).toBe(1);
    await owner.unbind();
    await other.unbind();
    expect(await other.bind(second.fd, COPY_ENGINE)).toBe(1);
  });

  it('attaches to nothing but an IOAS or a paging HWPT, and stays put when it fails', async () => {
    const { process } = await bootWithDevices();
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    const dev = await TestDevice.open(process);
    const devId = await dev.bind(iommufd.fd, COPY_ENGINE);
    expect(await errnoOf(dev.attach(99))).toBe('ENOENT');
    expect(await errnoOf(dev.attach(devId))).toBe('EINVAL');
    expect((await dev.state()).hwptId).toBe(0);
    const hwpt = await dev.attach(ioas);
    expect(await errnoOf(dev.attach(0))).toBe('ENOENT');
    expect(await errnoOf(dev.attach(devId))).toBe('EINVAL');
    expect((await dev.state()).hwptId).toBe(hwpt);
  });

  it('keeps its device object from IOMMU_DESTROY (EBUSY); unbind removes it', async () => {
    const { process } = await bootWithDevices();
    const iommufd = await IommufdDevice.open(process);
    const dev = await TestDevice.open(process);
    const devId = await dev.bind(iommufd.fd, COPY_ENGINE);
    expect(await errnoOf(iommufd.destroy(devId))).toBe('EBUSY');
    await dev.unbind();
    expect(await errnoOf(iommufd.destroy(devId))).toBe('ENOENT');
    expect((await dev.state()).devId).toBe(0);
  });
});

describe('IOMMU_HWPT_ALLOC errors', () => {
  it('reports each bad argument with the kernel errno and creates nothing', async () => {
    const { process } = await bootWithDevices();
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    await guestRing(process, iommufd.fd, ioas, 0);
    const dev = await TestDevice.open(process);
    const devId = await dev.bind(iommufd.fd, COPY_ENGINE);
    const paging = await iommufd.hwptAlloc(devId, ioas);
    const { domains } = await dev.state();
    const good = { dev_id: devId, pt_id: ioas };
    const cases: [string, HwptAllocFields, string][] = [
      ['unknown flags', { ...good, flags: 0x8000_0000 }, 'EOPNOTSUPP'],
      ['NEST_PARENT (no nesting here)', { ...good, flags: 1 }, 'EOPNOTSUPP'],
      ['a reserved field set', { ...good, __reserved: 1 }, 'EOPNOTSUPP'],
      ['__reserved2 set', { ...good, __reserved2: 1 }, 'EOPNOTSUPP'],
      ['a data type', { ...good, data_type: 1, data_len: 8 }, 'EOPNOTSUPP'],
      ['data without a data type', { ...good, data_len: 8 }, 'EINVAL'],
      ['a data type without data', { ...good, data_type: 1 }, 'EINVAL'],
      ['no such device object', { ...good, dev_id: 99 }, 'ENOENT'],
      ['a dev_id that is an IOAS', { ...good, dev_id: ioas }, 'ENOENT'],
      ['no such pt_id', { ...good, pt_id: 99 }, 'ENOENT'],
      ['a pt_id that is a device', { ...good, pt_id: devId }, 'EINVAL'],
      ['a pt_id that is a paging HWPT (nesting)', { ...good, pt_id: paging }, 'EOPNOTSUPP'],
    ];
    for (const [what, fields, errno] of cases) {
      expect({ what, errno: await errnoOf(hwptAlloc(process, iommufd.fd, fields)) }).toEqual({
        what,
        errno,
      });
    }
    expect((await dev.state()).domains).toBe(domains);
    expect(await hwptAlloc(process, iommufd.fd, good)).toBe(paging + 1);
  });
});
