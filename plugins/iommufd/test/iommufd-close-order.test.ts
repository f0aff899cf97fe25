import { describe, expect, it } from 'vitest';
import { DMA_COPY_STATUS } from '@liveupdate/machine';
import { IommufdDevice } from '../src/index.js';
import { testkitStats } from './helpers.js';
import {
  COPY_ENGINE,
  NIC,
  PAGE,
  TestDevice,
  bootWithDevices,
  guestRing,
  pattern,
} from './hwpt-helpers.js';

const BASE = 0x10_0000;
const LEN = 64;

/**
 * The counts to come back to. The IOMMU driver allocates bus 0's context table on the first
 * attach and keeps it for the whole boot, as VT-d does; attach once first so it is in the baseline.
 */
async function baseline(process: Awaited<ReturnType<typeof bootWithDevices>>['process']) {
  const iommufd = await IommufdDevice.open(process);
  const dev = await TestDevice.open(process);
  await dev.bind(iommufd.fd, NIC);
  await dev.attach(await iommufd.allocIoas());
  await dev.close();
  await iommufd.close();
  return testkitStats(process);
}

/** An iommufd with a mapped ring, an explicit HWPT and both devices bound and attached. */
async function busyIommufd(process: Awaited<ReturnType<typeof bootWithDevices>>['process']) {
  const iommufd = await IommufdDevice.open(process);
  const ioas = await iommufd.allocIoas();
  const ring = await guestRing(process, iommufd.fd, ioas, BASE);
  const copier = await TestDevice.open(process);
  const nic = await TestDevice.open(process);
  const devId = await copier.bind(iommufd.fd, COPY_ENGINE);
  await nic.bind(iommufd.fd, NIC);
  await copier.attach(await iommufd.hwptAlloc(devId, ioas));
  await nic.attach(ioas);
  await process.pwrite(ring.memfd, pattern(LEN, 1), 2 * PAGE);
  expect(await copier.copy(ring, BASE + 2 * PAGE, BASE + 4 * PAGE, LEN)).toMatchObject({
    status: DMA_COPY_STATUS.SUCCESS,
  });
  return { iommufd, ring, copier, nic };
}

describe('closing an iommufd with bound devices', () => {
  it('keeps the context while a device is bound, and frees everything after the unbind', async () => {
    const { process } = await bootWithDevices();
    const before = await baseline(process);
    const probe = await TestDevice.open(process);
    const { domains } = await probe.state();
    const { iommufd, ring, copier, nic } = await busyIommufd(process);
    await iommufd.close();
    await process.close(ring.memfd);
    // Still mapped and attached: the bindings hold the iommufd.
    expect(await copier.iovaToPhys(BASE)).not.toBeNull();
    expect((await probe.state()).domains).toBe(domains + 2);
    expect((await testkitStats(process)).pinnedFrames).toBeGreaterThan(before.pinnedFrames);
    await copier.unbind();
    // The explicit HWPT lives as long as the context, which the NIC's binding still holds.
    expect((await probe.state()).domains).toBe(domains + 2);
    await nic.unbind();
    expect((await probe.state()).domains).toBe(domains);
    await Promise.all([copier.close(), nic.close(), probe.close()]);
    expect(await testkitStats(process)).toEqual(before);
  });

  it('unbinds a device whose file is closed first, then releases on the iommufd close', async () => {
    const { process } = await bootWithDevices();
    const before = await baseline(process);
    const { iommufd, ring, copier, nic } = await busyIommufd(process);
    await copier.close();
    await nic.close();
    const probe = await TestDevice.open(process);
    expect(await probe.bind(iommufd.fd, COPY_ENGINE)).toBeGreaterThan(0);
    await probe.unbind();
    await iommufd.close();
    await process.close(ring.memfd);
    await probe.close();
    expect(await testkitStats(process)).toEqual(before);
  });

  it('leaks nothing when the memfd goes first, then the iommufd, then the devices', async () => {
    const { process } = await bootWithDevices();
    const before = await baseline(process);
    const { iommufd, ring, copier, nic } = await busyIommufd(process);
    await process.close(ring.memfd);
    await iommufd.close();
    const held = await testkitStats(process);
    expect(held.pinnedFrames).toBeGreaterThan(before.pinnedFrames);
    expect(held.openFiles).toBeGreaterThan(before.openFiles);
    await nic.close();
    expect((await testkitStats(process)).pinnedFrames).toBe(held.pinnedFrames);
    await copier.close();
    expect(await testkitStats(process)).toEqual(before);
  });
});
