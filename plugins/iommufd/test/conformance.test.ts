// iommufd-v1 against the testkit's conformance laws, from the published entry point with the
// modules by package name, as a third-party handler package runs them.
//
// The suite makes each file on its own, so the iommufd it preserves marks no HWPT: a marked HWPT
// needs a bound device and a memfd preserved in the same session, which the laws do not set up
// (those paths are covered by iommufd-live-update.test.ts). What such an iommufd carries across
// is that it is an iommufd, empty and usable.
//
// Two laws cannot apply: "finish of a never-retrieved file frees its preserved memory" and
// "unpreserve, unfreeze and finish never throw" both FINISH a session holding a file that was
// never retrieved, but iommufd-v1's canFinish requires the file to be retrieved (upstream's
// can_finish does the same: the VMM must reclaim every preserved HWPT and move its devices off it
// before the session may finish), so that FINISH is EBUSY. They are run here to show they fail
// for exactly that reason; every other law is run as describeConformance would.
import { describe, expect, it } from 'vitest';
import type { Process } from '@liveupdate/machine';
import { CONFORMANCE_LAWS, checkConformanceLaw } from '@liveupdate/testkit';
import { IommufdDevice } from '../src/index.js';

const options = {
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
};

const NOT_APPLICABLE: readonly string[] = ['finish-unretrieved', 'void-ops'];

describe('iommufd-v1 conformance', () => {
  it.each(CONFORMANCE_LAWS.filter((law) => !NOT_APPLICABLE.includes(law.id)))(
    '$title',
    async ({ id }) => {
      const verdict = await checkConformanceLaw(id, options);
      if (verdict.status === 'failed') throw new Error(verdict.message, { cause: verdict.cause });
      expect(verdict.status).not.toBe('failed');
    },
    60_000,
  );

  it.each(CONFORMANCE_LAWS.filter((law) => NOT_APPLICABLE.includes(law.id)))(
    'cannot hold "$title": FINISH of a never-retrieved iommufd is EBUSY',
    async ({ id }) => {
      const verdict = await checkConformanceLaw(id, options);
      expect(verdict.status).toBe('failed');
      expect(verdict.message).toMatch(/FINISH.*EBUSY.*iommufd-v1 token \d+ cannot finish yet/);
    },
    60_000,
  );
});
