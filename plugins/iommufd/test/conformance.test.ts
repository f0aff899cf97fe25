// iommufd-v1 against the testkit's conformance laws, from the published entry point with the
// modules by package name, as a third-party handler package runs them.
//
// The suite makes each file on its own, so the iommufd it preserves marks no HWPT: a marked HWPT
// needs a bound device and a memfd preserved in the same session, which the laws do not set up
// (those paths are covered by iommufd-live-update.test.ts). What such an iommufd carries across
// is that it is an iommufd, empty and usable.
//
// Two laws cannot hold by design, and are declared as exceptions below: the suite runs them and
// reports them skipped with the reason while they fail (and fails them if they ever hold).
import type { Process } from '@liveupdate/machine';
import { describeConformance } from '@liveupdate/testkit';
import { IommufdDevice } from '../src/index.js';

/**
 * iommufd-v1's canFinish requires the file to be retrieved (upstream's can_finish does the same:
 * the VMM must reclaim every preserved HWPT and move its devices off it before the session may
 * finish), so a FINISH of a session holding a never-retrieved iommufd is EBUSY.
 */
const FINISH_NEEDS_RETRIEVE =
  'canFinish requires the iommufd to be retrieved (as upstream: the VMM reclaims its HWPTs first), so FINISH of a never-retrieved one is EBUSY';

describeConformance({
  name: 'iommufd-v1 conformance',
  handlerCompatible: 'iommufd-v1',
  modules: ['@liveupdate/plugin-memfd', '@liveupdate/plugin-iommufd'],
  moduleBase: import.meta.url,
  async createFile(process: Process): Promise<number> {
    return (await IommufdDevice.open(process)).fd;
  },
  /** An empty, working iommufd: the first IOAS it allocates gets id 1, and has no mappings. */
  async readContent(process: Process, fd: number): Promise<unknown> {
    const iommufd = IommufdDevice.fromFd(process, fd);
    const ioas = await iommufd.allocIoas();
    const mappings = await iommufd.mappings(ioas);
    await iommufd.destroy(ioas);
    return { ioas, mappings };
  },
  exceptions: {
    'finish-unretrieved': FINISH_NEEDS_RETRIEVE,
    'void-ops': `its FINISH leaves token 2 unretrieved: ${FINISH_NEEDS_RETRIEVE}`,
  },
});
