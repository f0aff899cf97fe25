import { LiveUpdateDevice, type LiveUpdateSession } from '@liveupdate/core';
import {
  F_ADD_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  MFD_ALLOW_SEALING,
  type Process,
} from '@liveupdate/machine';
import { statsDifferences, testkitStats, type LiveUpdateHarness } from '@liveupdate/testkit';
import { IommufdDevice } from '../src/index.js';
import { COPY_ENGINE, PAGE, TestDevice, pattern, type GuestRing } from './hwpt-helpers.js';

/** Where the guest RAM is mapped in every IOAS of these tests. */
export const GUEST_IOVA = 0x10_0000;
/** Guest RAM: ring at page 0, completions at page 1, data from page 2. */
export const GUEST_BYTES = 16 * PAGE;
export const HWPT_TOKEN = 0x5eed;
export const MEMFD_TOKEN = 1n;
export const IOMMUFD_TOKEN = 2n;
export const SEALS = F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL;

/** A VMM of the outgoing kernel: sealed guest RAM mapped into an IOAS, the copy engine on a HWPT. */
export interface Vmm {
  readonly process: Process;
  readonly iommufd: IommufdDevice;
  readonly ioas: number;
  readonly hwpt: number;
  readonly ring: GuestRing;
  readonly device: TestDevice;
}

/**
 * Step 1 of the VMM's walk: guest RAM (`seals` added before the mapping unless `false`), an
 * iommufd with an IOAS mapping it at {@link GUEST_IOVA}, the copy engine bound and attached to a
 * new HWPT, the HWPT marked with {@link HWPT_TOKEN} unless `mark` is false.
 */
export async function vmmSetup(
  process: Process,
  options: { sealed?: boolean; mark?: boolean } = {},
): Promise<Vmm> {
  const memfd = await process.memfdCreate('guest-ram', MFD_ALLOW_SEALING);
  await process.ftruncate(memfd, GUEST_BYTES);
  if (options.sealed !== false) await process.fcntl(memfd, F_ADD_SEALS, SEALS);
  const iommufd = await IommufdDevice.open(process);
  const ioas = await iommufd.allocIoas();
  await iommufd.mapFile(ioas, { fd: memfd, length: GUEST_BYTES, iova: GUEST_IOVA });
  const device = await TestDevice.open(process);
  const devId = await device.bind(iommufd.fd, COPY_ENGINE);
  const hwpt = await iommufd.hwptAlloc(devId, ioas);
  await device.attach(hwpt);
  if (options.mark !== false) await iommufd.hwptLuSetPreserve(hwpt, HWPT_TOKEN);
  return { process, iommufd, ioas, hwpt, ring: { memfd, iova: GUEST_IOVA }, device };
}

/** Create session `name` on `process` (the device fd is closed again; the session stays). */
export async function createSession(process: Process, name = 'vm'): Promise<LiveUpdateSession> {
  const luo = await LiveUpdateDevice.open(process);
  const session = await luo.createSession(name);
  await luo.close();
  return session;
}

/** Retrieve session `name` in the new kernel. */
export async function retrieveSession(process: Process, name = 'vm'): Promise<LiveUpdateSession> {
  const luo = await LiveUpdateDevice.open(process);
  const session = await luo.retrieveSession(name);
  await luo.close();
  return session;
}

/**
 * Step 2: preserve the memfd and the iommufd in a new session, and the device on its HWPT
 * (what vfio-pci-v1 does).
 */
export async function preserveVmm(vmm: Vmm, name = 'vm'): Promise<LiveUpdateSession> {
  const session = await createSession(vmm.process, name);
  await session.preserveFd(vmm.ring.memfd, MEMFD_TOKEN);
  await session.preserveFd(vmm.iommufd.fd, IOMMUFD_TOKEN);
  await vmm.device.luPreserve();
  return session;
}

/**
 * Have the copy engine copy a page of a fresh pattern from page 2 to page `3 + (n % 8)` of guest
 * RAM; returns whether the copy completed successfully and the bytes arrived.
 */
export async function copyWorks(device: TestDevice, ring: GuestRing): Promise<boolean> {
  const { process } = device;
  const seed = device.copies + 1;
  const dst = 3 + (device.copies % 8);
  const bytes = pattern(PAGE, seed);
  await process.pwrite(ring.memfd, bytes, 2 * PAGE);
  const result = await device.copy(ring, ring.iova + 2 * PAGE, ring.iova + dst * PAGE, PAGE);
  const copied = await process.pread(ring.memfd, PAGE, dst * PAGE);
  return result.status === 1 && result.copied === PAGE && copied.every((b, i) => b === bytes[i]);
}

/** Run `op`, which must fail, and return its errno and the leak counts that moved. */
export async function failsCleanly(
  process: Process,
  op: () => Promise<unknown>,
): Promise<{ errno: string | undefined; leaked: string[] }> {
  const before = await testkitStats(process);
  let errno: string | undefined;
  try {
    await op();
  } catch (error) {
    errno = (error as { code?: string }).code;
  }
  return { errno, leaked: statsDifferences(before, await testkitStats(process)) };
}

/** Domains the IOMMU driver has in use, through the test device. */
export async function domainsInUse(device: TestDevice): Promise<number> {
  return (await device.state()).domains;
}

export type { LiveUpdateHarness };
