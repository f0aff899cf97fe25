// iommufd-v1 against the testkit's conformance laws, from the published entry point with the
// modules by package name, as a third-party handler package runs them.
//
// Each session is what a VMM preserves of its IOMMU state: guest RAM (a memfd sealed before it is
// mapped) and an iommufd whose IOAS maps it through a paging HWPT marked for preservation, in
// that order, as iommufd-v1's preserve requires. A paging HWPT is allocated for a bound device:
// the test device module binds the copy engine for that and unbinds it again, so no device is
// preserved on the HWPT (devices on preserved HWPTs are vfio-pci-v1's run, in plugins/vfio).
//
// Laws that cannot hold by design are declared as exceptions below: the suite runs them and
// reports them skipped with the reason while they fail (and fails them if they ever hold).
import {
  F_ADD_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  MFD_ALLOW_SEALING,
  type Process,
} from '@liveupdate/machine';
import { describeConformance } from '@liveupdate/testkit';
import { IommufdDevice } from '../src/index.js';
import { KiB } from './helpers.js';
import { COPY_ENGINE, NIC, TEST_DEVICE_MODULE, TestDevice } from './hwpt-helpers.js';

const RAM_BYTES = 64 * KiB;
/** The token of the HWPT each session's iommufd marks for preservation. */
const HWPT_TOKEN = 1;
/** A mark each session writes into its guest RAM, to be found there after the update. */
const GUEST_MARK = new TextEncoder().encode('guest RAM survives');

/**
 * iommufd-v1's canFinish requires the file to be retrieved (upstream's can_finish does the same:
 * the VMM must reclaim every preserved HWPT and move its devices off it before the session may
 * finish), so a FINISH of a session holding a never-retrieved iommufd is EBUSY.
 */
const FINISH_NEEDS_RETRIEVE =
  'canFinish requires the iommufd to be retrieved (as upstream: the VMM reclaims its HWPTs first), so FINISH of a never-retrieved one is EBUSY';

/**
 * An IOAS of `iommufd` mapping guest RAM at IOVA 0 and a paging HWPT on it, marked for
 * preservation. The copy engine is bound only while the HWPT is allocated.
 */
async function markHwpt(process: Process, iommufd: IommufdDevice, ram: number): Promise<void> {
  const ioas = await iommufd.allocIoas();
  await iommufd.mapFile(ioas, { fd: ram, length: RAM_BYTES, iova: 0 });
  const device = await TestDevice.open(process);
  try {
    const hwpt = await iommufd.hwptAlloc(await device.bind(iommufd.fd, COPY_ENGINE), ioas);
    await iommufd.hwptLuSetPreserve(hwpt, HWPT_TOKEN);
  } finally {
    await device.close();
  }
}

describeConformance({
  name: 'iommufd-v1 conformance',
  handlerCompatible: 'iommufd-v1',
  modules: ['@liveupdate/plugin-memfd', '@liveupdate/plugin-iommufd', TEST_DEVICE_MODULE],
  moduleBase: import.meta.url,
  devices: [
    { kind: 'nic', bdf: NIC },
    { kind: 'dma-copy', bdf: COPY_ENGINE },
  ],
  async createSession(process) {
    const ram = await process.memfdCreate('guest-ram', MFD_ALLOW_SEALING);
    await process.ftruncate(ram, RAM_BYTES);
    await process.pwrite(ram, GUEST_MARK, 0);
    // Sealed before it is mapped: iommufd-v1 preserves only such guest RAM.
    await process.fcntl(ram, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
    const iommufd = await IommufdDevice.open(process);
    await markHwpt(process, iommufd, ram);
    return {
      files: [
        { name: 'guest RAM', fd: ram },
        { name: 'iommufd', fd: iommufd.fd },
      ],
      fileUnderTest: 'iommufd',
    };
  },
  /**
   * A working iommufd (a new IOAS has no mappings) and the guest RAM preserved with it. That the
   * marked HWPT crossed is checked by `prepareFinish`, which reclaims it by its token.
   */
  async readContent(process, fd, files) {
    const iommufd = IommufdDevice.fromFd(process, fd);
    const ioas = await iommufd.allocIoas();
    const mappings = await iommufd.mappings(ioas);
    await iommufd.destroy(ioas);
    return {
      mappings,
      guest: await process.pread(await files.fd('guest RAM'), GUEST_MARK.length, 0),
    };
  },
  /**
   * What a VMM does before FINISH: reclaim the preserved HWPT by its token (ENOENT if it did not
   * cross) and, with no device on it, destroy it; then mark a new HWPT over the retrieved guest
   * RAM, so that the session can be preserved again (the three-updates law).
   */
  async prepareFinish(process, fd, files) {
    const iommufd = IommufdDevice.fromFd(process, fd);
    await iommufd.destroy(await iommufd.hwptLuRestore(HWPT_TOKEN));
    await markHwpt(process, iommufd, await files.fd('guest RAM'));
  },
  exceptions: {
    'finish-unretrieved': FINISH_NEEDS_RETRIEVE,
    'void-ops': `its FINISH leaves token 2 unretrieved: ${FINISH_NEEDS_RETRIEVE}`,
  },
});
