// iommufd-v1 through real live updates: the VMM's walk of the shared contract, with the copy
// engine standing in for a vfio device (the fixture preserves it as vfio-pci-v1 would).
import { describe, expect, it } from 'vitest';
import { copyStructFromUser } from '@liveupdate/core';
import { testkitStats } from '@liveupdate/testkit';
import { IOMMU_HWPT_LU_RESTORE, IommufdDevice, iommuHwptLuRestore } from '../src/index.js';
import { argOf, errnoOf } from './helpers.js';
import { COPY_ENGINE, TestDevice, bootWithDevices } from './hwpt-helpers.js';
import {
  GUEST_BYTES,
  GUEST_IOVA,
  HWPT_TOKEN,
  IOMMUFD_TOKEN,
  MEMFD_TOKEN,
  copyWorks,
  createSession,
  preserveVmm,
  retrieveSession,
  vmmSetup,
  type LiveUpdateHarness,
} from './lu-helpers.js';

/** Boot, set up the VMM, check the copy engine works, preserve it all and live-update. */
async function acrossLiveUpdate(harness: LiveUpdateHarness) {
  const vmm = await vmmSetup(harness.process);
  expect(await copyWorks(vmm.device, vmm.ring)).toBe(true);
  const oldDomain = (await vmm.device.state()).domainId;
  await preserveVmm(vmm);
  const copiesDone = vmm.device.copies;
  const process = await harness.liveUpdate();
  const session = await retrieveSession(process);
  const iommufd = IommufdDevice.fromFd(process, await session.retrieveFd(IOMMUFD_TOKEN));
  const memfd = await session.retrieveFd(MEMFD_TOKEN);
  const device = await TestDevice.open(process, copiesDone);
  return { process, session, iommufd, ring: { memfd, iova: GUEST_IOVA }, device, vmm, oldDomain };
}

describe('an iommufd across a live update', () => {
  it('moves a DMA-ing device from its restored domain to a new one hitlessly, then finishes', async () => {
    const harness = await bootWithDevices();
    const { process, session, iommufd, ring, device, oldDomain } = await acrossLiveUpdate(harness);
    const faultsBefore = await device.faults();

    // Bind before restore: the device runs on the restored domain, not yet on a HWPT of ours.
    const devId = await device.bind(iommufd.fd, COPY_ENGINE);
    const restoredDomain = (await device.state()).domainId;
    expect(restoredDomain).toBe(oldDomain);
    expect((await device.state()).hwptId).toBe(0);
    expect(await copyWorks(device, ring)).toBe(true);
    expect(await errnoOf(session.finish())).toBe('EBUSY');

    const restored = await iommufd.hwptLuRestore(HWPT_TOKEN);
    expect((await device.state()).hwptId).toBe(restored);
    expect(await errnoOf(iommufd.hwptLuRestore(HWPT_TOKEN))).toBe('ENOENT');
    // All restored, but the device is still on the restored HWPT.
    expect(await errnoOf(session.finish())).toBe('EBUSY');
    expect(await errnoOf(iommufd.destroy(restored))).toBe('EBUSY');

    const ioas = await iommufd.allocIoas();
    await iommufd.mapFile(ioas, { fd: ring.memfd, length: GUEST_BYTES, iova: GUEST_IOVA });
    const hwpt = await iommufd.hwptAlloc(devId, ioas);
    expect(await device.attach(hwpt)).toBe(hwpt);
    const moved = await device.state();
    expect(moved.domainId).not.toBe(restoredDomain);
    expect(moved.hwptId).toBe(hwpt);
    expect(await copyWorks(device, ring)).toBe(true);
    expect(await device.faults()).toBe(faultsBefore);

    // Destroying the restored HWPT frees its domain's page-table frames: 4 levels for 64 KiB.
    const before = await testkitStats(process);
    await iommufd.destroy(restored);
    const after = await testkitStats(process);
    expect(after.framesAllocated).toBe(before.framesAllocated - 4);
    expect((await device.state()).domains).toBe(moved.domains - 1);
    await session.finish();
    expect(await copyWorks(device, ring)).toBe(true);
    expect(await device.faults()).toBe(faultsBefore);
  });

  it('moves a device that was never put on a restored HWPT with a hitless replace too', async () => {
    const harness = await bootWithDevices();
    const { session, iommufd, ring, device, oldDomain } = await acrossLiveUpdate(harness);
    await device.bind(iommufd.fd, COPY_ENGINE);
    const ioas = await iommufd.allocIoas();
    await iommufd.mapFile(ioas, { fd: ring.memfd, length: GUEST_BYTES, iova: GUEST_IOVA });
    const faults = await device.faults();
    await device.attach(ioas);
    expect((await device.state()).domainId).not.toBe(oldDomain);
    expect(await copyWorks(device, ring)).toBe(true);
    expect(await device.faults()).toBe(faults);
    // The preserved HWPT is still to be reclaimed; once restored, nothing is attached to it.
    expect(await errnoOf(session.finish())).toBe('EBUSY');
    const restored = await iommufd.hwptLuRestore(HWPT_TOKEN);
    await iommufd.destroy(restored);
    await session.finish();
  });

  it('counts a device bound after IOMMU_HWPT_LU_RESTORE as attached to the restored HWPT', async () => {
    const harness = await bootWithDevices();
    const { session, iommufd, ring, device } = await acrossLiveUpdate(harness);
    const restored = await iommufd.hwptLuRestore(HWPT_TOKEN);
    const devId = await device.bind(iommufd.fd, COPY_ENGINE);
    expect((await device.state()).hwptId).toBe(restored);
    expect(await copyWorks(device, ring)).toBe(true);
    expect(await errnoOf(session.finish())).toBe('EBUSY');

    // Moving it to an IOAS (an auto domain) is a hitless replace too.
    const ioas = await iommufd.allocIoas();
    await iommufd.mapFile(ioas, { fd: ring.memfd, length: GUEST_BYTES, iova: GUEST_IOVA });
    const faults = await device.faults();
    const auto = await device.attach(ioas);
    expect(auto).not.toBe(restored);
    expect(await copyWorks(device, ring)).toBe(true);
    expect(await device.faults()).toBe(faults);
    // canFinish holds now even with the restored HWPT alive: no device is attached to it.
    await session.finish();
    await iommufd.destroy(restored);
    expect(devId).toBeGreaterThan(0);
  });

  it('refuses FINISH until every preserved HWPT is restored', async () => {
    const harness = await bootWithDevices();
    const vmm = await vmmSetup(harness.process);
    const devId = (await vmm.device.state()).devId;
    const idle = await vmm.iommufd.hwptAlloc(devId, vmm.ioas);
    await vmm.iommufd.hwptLuSetPreserve(idle, HWPT_TOKEN + 1);
    await preserveVmm(vmm);
    const process = await harness.liveUpdate();
    const session = await retrieveSession(process);
    const iommufd = IommufdDevice.fromFd(process, await session.retrieveFd(IOMMUFD_TOKEN));
    await session.retrieveFd(MEMFD_TOKEN);
    const device = await TestDevice.open(process, vmm.device.copies);
    await device.bind(iommufd.fd, COPY_ENGINE);
    const restored = await iommufd.hwptLuRestore(HWPT_TOKEN);
    const ioas = await iommufd.allocIoas();
    await device.attach(ioas);
    expect(await errnoOf(session.finish())).toBe('EBUSY');

    const idleRestored = await iommufd.hwptLuRestore(HWPT_TOKEN + 1);
    expect(idleRestored).not.toBe(restored);
    // No device was preserved on the idle HWPT: its restored domain can go at once.
    await iommufd.destroy(idleRestored);
    await session.finish();
  });

  it('fails IOMMU_HWPT_LU_RESTORE on an unknown token, with flags, or on an iommufd not retrieved', async () => {
    const harness = await bootWithDevices();
    const { process, iommufd } = await acrossLiveUpdate(harness);
    expect(await errnoOf(iommufd.hwptLuRestore(HWPT_TOKEN + 1))).toBe('ENOENT');
    const arg = argOf(iommuHwptLuRestore, {
      hwpt_token: HWPT_TOKEN,
      hwpt_alloc_flags: 1,
      out_pt_id: 0,
    });
    expect(await errnoOf(process.ioctl(iommufd.fd, IOMMU_HWPT_LU_RESTORE, arg))).toBe('EOPNOTSUPP');
    const fresh = await IommufdDevice.open(process);
    expect(await errnoOf(fresh.hwptLuRestore(HWPT_TOKEN))).toBe('EINVAL');
    // The refused attempts reclaimed nothing: the token still restores.
    const id = await iommufd.hwptLuRestore(HWPT_TOKEN);
    expect(copyStructFromUser(iommuHwptLuRestore, arg).hwpt_token).toBe(HWPT_TOKEN);
    expect(id).toBeGreaterThan(0);
  });

  it('hands over an iommufd with no marked HWPT: nothing to restore, FINISH at once', async () => {
    const harness = await bootWithDevices();
    const vmm = await vmmSetup(harness.process, { mark: false });
    const session0 = await createSession(harness.process);
    await session0.preserveFd(vmm.iommufd.fd, IOMMUFD_TOKEN);
    const process = await harness.liveUpdate();
    const session = await retrieveSession(process);
    const iommufd = IommufdDevice.fromFd(process, await session.retrieveFd(IOMMUFD_TOKEN));
    expect(await errnoOf(iommufd.hwptLuRestore(HWPT_TOKEN))).toBe('ENOENT');
    // The retrieved iommufd works like one opened from /dev/iommu.
    const ioas = await iommufd.allocIoas();
    expect(ioas).toBe(1);
    await session.finish();
    const stats = await testkitStats(process);
    expect(stats.khoUnrestoredFolios).toBe(0);
  });

  it('survives a second live update in a row, the new HWPT preserved from the retrieved iommufd', async () => {
    const harness = await bootWithDevices();
    const first = await acrossLiveUpdate(harness);
    const { iommufd, ring, device } = first;
    const devId = await device.bind(iommufd.fd, COPY_ENGINE);
    const restored = await iommufd.hwptLuRestore(HWPT_TOKEN);
    const ioas = await iommufd.allocIoas();
    await iommufd.mapFile(ioas, { fd: ring.memfd, length: GUEST_BYTES, iova: GUEST_IOVA });
    const hwpt = await iommufd.hwptAlloc(devId, ioas);
    await device.attach(hwpt);
    await iommufd.destroy(restored);
    await first.session.finish();
    // A restored HWPT cannot be marked, but the new one can, under the same token.
    await iommufd.hwptLuSetPreserve(hwpt, HWPT_TOKEN);

    const session = await createSession(first.process, 'vm');
    await session.preserveFd(ring.memfd, MEMFD_TOKEN);
    await session.preserveFd(iommufd.fd, IOMMUFD_TOKEN);
    await device.luPreserve();
    const copiesDone = device.copies;
    const faults = await device.faults();

    const process = await harness.liveUpdate();
    const next = await retrieveSession(process);
    const iommufd2 = IommufdDevice.fromFd(process, await next.retrieveFd(IOMMUFD_TOKEN));
    const ring2 = { memfd: await next.retrieveFd(MEMFD_TOKEN), iova: GUEST_IOVA };
    const device2 = await TestDevice.open(process, copiesDone);
    const restored2 = await iommufd2.hwptLuRestore(HWPT_TOKEN);
    await device2.bind(iommufd2.fd, COPY_ENGINE);
    expect(await copyWorks(device2, ring2)).toBe(true);
    const ioas2 = await iommufd2.allocIoas();
    await iommufd2.mapFile(ioas2, { fd: ring2.memfd, length: GUEST_BYTES, iova: GUEST_IOVA });
    await device2.attach(ioas2);
    await iommufd2.destroy(restored2);
    await next.finish();
    expect(await copyWorks(device2, ring2)).toBe(true);
    expect(await device2.faults()).toBe(faults);
  });
});

describe('the IOMMU FLB', () => {
  it('is preserved once for all iommufds and released with the last one', async () => {
    const harness = await bootWithDevices();
    const { process } = harness;
    const a = await IommufdDevice.open(process);
    const b = await IommufdDevice.open(process);
    const sessionA = await createSession(process, 'a');
    const sessionB = await createSession(process, 'b');
    const s0 = await testkitStats(process);
    await sessionA.preserveFd(a.fd, 1n);
    const s1 = await testkitStats(process);
    await sessionB.preserveFd(b.fd, 1n);
    const s2 = await testkitStats(process);
    // The first: its iommufd_lu and the FLB's data; the second: its iommufd_lu only.
    expect(s1.khoPreservedFolios - s0.khoPreservedFolios).toBe(2);
    expect(s2.khoPreservedFolios - s1.khoPreservedFolios).toBe(1);
    // Closing the first session leaves the FLB to the second iommufd.
    await sessionA.close();
    expect((await testkitStats(process)).khoPreservedFolios).toBe(s2.khoPreservedFolios - 1);
    await sessionB.close();
    expect((await testkitStats(process)).khoPreservedFolios).toBe(s0.khoPreservedFolios);
  });

  it('finishes after the last iommufd finished in the new kernel', async () => {
    const harness = await bootWithDevices();
    const { process } = harness;
    const sessionA = await createSession(process, 'a');
    const sessionB = await createSession(process, 'b');
    await sessionA.preserveFd((await IommufdDevice.open(process)).fd, 1n);
    await sessionB.preserveFd((await IommufdDevice.open(process)).fd, 1n);
    const next = await harness.liveUpdate();
    const a = await retrieveSession(next, 'a');
    const b = await retrieveSession(next, 'b');
    await a.retrieveFd(1n);
    await b.retrieveFd(1n);
    const finished = () => harness.machine.dmesg().includes('IOMMU FLB: finished');
    await a.finish();
    expect(finished()).toBe(false);
    await b.finish();
    expect(finished()).toBe(true);
    expect((await testkitStats(next)).khoUnrestoredFolios).toBe(0);
  });

  it('frees at its finish a restored domain nobody reclaimed, and leaves one a HWPT wraps', async () => {
    const harness = await bootWithDevices();
    const vmm = await vmmSetup(harness.process);
    await preserveVmm(vmm);
    await vmm.device.luLoneDomain();
    const process = await harness.liveUpdate();
    const session = await retrieveSession(process);
    const iommufd = IommufdDevice.fromFd(process, await session.retrieveFd(IOMMUFD_TOKEN));
    const ring = { memfd: await session.retrieveFd(MEMFD_TOKEN), iova: GUEST_IOVA };
    const device = await TestDevice.open(process, vmm.device.copies);
    await device.bind(iommufd.fd, COPY_ENGINE);
    const restored = await iommufd.hwptLuRestore(HWPT_TOKEN);
    const ioas = await iommufd.allocIoas();
    await iommufd.mapFile(ioas, { fd: ring.memfd, length: GUEST_BYTES, iova: GUEST_IOVA });
    await device.attach(ioas);
    // The HWPT's restored domain, the lone one, and the new auto domain.
    expect((await device.state()).domains).toBe(3);
    const allocated = (await testkitStats(process)).framesAllocated;
    await session.finish();
    expect(harness.machine.dmesg()).toContain('IOMMU FLB: finished; freed 1 unreclaimed');
    expect((await device.state()).domains).toBe(2);
    // The lone domain's root table and the iommufd_lu folio went back to the allocator.
    expect((await testkitStats(process)).framesAllocated).toBe(allocated - 2);
    await iommufd.destroy(restored);
    expect((await device.state()).domains).toBe(1);
    expect(await copyWorks(device, ring)).toBe(true);
  });
});
