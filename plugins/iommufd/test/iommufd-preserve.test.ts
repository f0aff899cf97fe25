// iommufd-v1 in the outgoing kernel: marking HWPTs, what preserve checks, and what it undoes.
import { describe, expect, it } from 'vitest';
import { F_ADD_SEALS } from '@liveupdate/machine';
import { testkitStats } from '@liveupdate/testkit';
import { IommufdDevice } from '../src/index.js';
import { errnoOf } from './helpers.js';
import { PAGE, bootWithDevices } from './hwpt-helpers.js';
import {
  GUEST_BYTES,
  GUEST_IOVA,
  HWPT_TOKEN,
  IOMMUFD_TOKEN,
  MEMFD_TOKEN,
  SEALS,
  createSession,
  failsCleanly,
  vmmSetup,
} from './lu-helpers.js';

describe('IOMMU_HWPT_LU_SET_PRESERVE', () => {
  it('marks a paging HWPT under a token unique in the iommufd', async () => {
    const { process } = await bootWithDevices();
    const vmm = await vmmSetup(process);
    const { iommufd } = vmm;
    const devId = (await vmm.device.state()).devId;
    const second = await iommufd.hwptAlloc(devId, vmm.ioas);

    expect(await errnoOf(iommufd.hwptLuSetPreserve(second, HWPT_TOKEN))).toBe('EADDRINUSE');
    expect(await errnoOf(iommufd.hwptLuSetPreserve(99, 1))).toBe('ENOENT');
    expect(await errnoOf(iommufd.hwptLuSetPreserve(vmm.ioas, 1))).toBe('EINVAL');
    expect(await errnoOf(iommufd.hwptLuSetPreserve(devId, 1))).toBe('EINVAL');
    // Marking the same HWPT again with its token is no conflict; another iommufd has its own tokens.
    await iommufd.hwptLuSetPreserve(vmm.hwpt, HWPT_TOKEN);
    await iommufd.hwptLuSetPreserve(second, HWPT_TOKEN + 1);
    const other = await IommufdDevice.open(process);
    const otherIoas = await other.allocIoas();
    const memfd = await process.memfdCreate('other');
    await process.ftruncate(memfd, PAGE);
    await other.mapFile(otherIoas, { fd: memfd, length: PAGE });
    expect(await errnoOf(other.hwptLuSetPreserve(otherIoas, HWPT_TOKEN))).toBe('EINVAL');
  });

  it('is EBUSY once the iommufd is preserved', async () => {
    const { process } = await bootWithDevices();
    const vmm = await vmmSetup(process);
    const session = await createSession(process);
    await session.preserveFd(vmm.ring.memfd, MEMFD_TOKEN);
    await session.preserveFd(vmm.iommufd.fd, IOMMUFD_TOKEN);
    expect(await errnoOf(vmm.iommufd.hwptLuSetPreserve(vmm.hwpt, HWPT_TOKEN + 1))).toBe('EBUSY');
  });
});

describe('preserving an iommufd', () => {
  it('refuses EINVAL when a mapped memfd lacked the seals at map time, leaking nothing', async () => {
    const { process } = await bootWithDevices();
    const vmm = await vmmSetup(process, { sealed: false });
    // Sealing after the mapping is too late: the seals are those recorded when it was mapped.
    await process.fcntl(vmm.ring.memfd, F_ADD_SEALS, SEALS);
    const session = await createSession(process);
    await session.preserveFd(vmm.ring.memfd, MEMFD_TOKEN);
    const { errno, leaked } = await failsCleanly(process, () =>
      session.preserveFd(vmm.iommufd.fd, IOMMUFD_TOKEN),
    );
    expect(errno).toBe('EINVAL');
    expect(leaked).toEqual([]);
    // The IOAS is still mutable.
    await vmm.iommufd.unmap(vmm.ioas, GUEST_IOVA, GUEST_BYTES);
  });

  it('refuses ENOENT when a mapped memfd is not preserved in the same session', async () => {
    const { process } = await bootWithDevices();
    const vmm = await vmmSetup(process);
    const elsewhere = await createSession(process, 'elsewhere');
    await elsewhere.preserveFd(vmm.ring.memfd, MEMFD_TOKEN);
    const session = await createSession(process);
    const { errno, leaked } = await failsCleanly(process, () =>
      session.preserveFd(vmm.iommufd.fd, IOMMUFD_TOKEN),
    );
    expect(errno).toBe('ENOENT');
    expect(leaked).toEqual([]);
  });

  it('accepts a memfd preserved through another fd of the same file', async () => {
    const { process } = await bootWithDevices();
    const vmm = await vmmSetup(process);
    const session = await createSession(process);
    await session.preserveFd(await process.dup(vmm.ring.memfd), MEMFD_TOKEN);
    await session.preserveFd(vmm.iommufd.fd, IOMMUFD_TOKEN);
  });

  it('makes the IOAS immutable (EBUSY) until the session closes, then mutable again with nothing left', async () => {
    const { process } = await bootWithDevices();
    const vmm = await vmmSetup(process);
    const memfd2 = await process.memfdCreate('more');
    await process.ftruncate(memfd2, PAGE);
    const before = await testkitStats(process);
    const session = await createSession(process);
    await session.preserveFd(vmm.ring.memfd, MEMFD_TOKEN);
    await session.preserveFd(vmm.iommufd.fd, IOMMUFD_TOKEN);
    const preserved = await testkitStats(process);
    // The iommufd_lu folio, the FLB's and the HWPT domain's four table frames are preserved.
    expect(preserved.khoPreservedFolios).toBeGreaterThan(before.khoPreservedFolios);

    expect(await errnoOf(vmm.iommufd.unmap(vmm.ioas, GUEST_IOVA, GUEST_BYTES))).toBe('EBUSY');
    expect(await errnoOf(vmm.iommufd.unmap(vmm.ioas))).toBe('EBUSY');
    expect(await errnoOf(vmm.iommufd.mapFile(vmm.ioas, { fd: memfd2, length: PAGE }))).toBe(
      'EBUSY',
    );
    // The marked HWPT cannot go either.
    await vmm.device.detach();
    expect(await errnoOf(vmm.iommufd.destroy(vmm.hwpt))).toBe('EBUSY');
    await vmm.device.attach(vmm.hwpt);

    await session.close();
    const after = await testkitStats(process);
    expect(after.khoPreservedFolios).toBe(before.khoPreservedFolios);
    expect(after.framesAllocated).toBe(before.framesAllocated);
    const iova = await vmm.iommufd.mapFile(vmm.ioas, { fd: memfd2, length: PAGE });
    expect(await vmm.iommufd.unmap(vmm.ioas, iova, PAGE)).toBe(PAGE);
    // Marks can change again.
    await vmm.iommufd.hwptLuSetPreserve(vmm.hwpt, HWPT_TOKEN + 1);
  });

  it('preserves an iommufd with no marked HWPT, leaving its IOAS mutable', async () => {
    const { process } = await bootWithDevices();
    const vmm = await vmmSetup(process, { mark: false, sealed: false });
    const session = await createSession(process);
    await session.preserveFd(vmm.iommufd.fd, IOMMUFD_TOKEN);
    expect(await vmm.iommufd.unmap(vmm.ioas, GUEST_IOVA, GUEST_BYTES)).toBe(GUEST_BYTES);
  });
});
