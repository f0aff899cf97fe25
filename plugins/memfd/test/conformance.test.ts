// Both builds of the memfd plugin (memfd-v3, and the memfd-v2 one of 6.18.0) against the
// testkit's conformance suite and table tester, exactly as a third-party handler package runs
// them: from the published entry points, with the module by package name.
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_SHRINK,
  MFD_ALLOW_SEALING,
  MFD_HUGETLB,
  PAGE_SIZE,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
  type Process,
} from '@liveupdate/machine';
import { describeConformance, handlerCase, runHandlerCases } from '@liveupdate/testkit';

const builds = [
  { handlerCompatible: 'memfd-v3', module: '@liveupdate/plugin-memfd' },
  { handlerCompatible: 'memfd-v2', module: '@liveupdate/plugin-memfd/memfd-v2' },
] as const;

/** A recognisable byte pattern. */
const pattern = (length: number, seed: number): Uint8Array =>
  Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);

/**
 * A sealed memfd of a little over 2 MiB: a page of data, a hole up to 1 MiB (preserve fills it),
 * then data in large folios and a partial last page; the position is set too.
 */
async function createMemfd(process: Process): Promise<number> {
  const fd = await process.memfdCreate('conformance', MFD_ALLOW_SEALING);
  await process.pwrite(fd, pattern(PAGE_SIZE, 1), 0);
  await process.pwrite(fd, pattern(1024 * 1024 + 3 * PAGE_SIZE + 17, 2), 1024 * 1024);
  await process.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
  await process.lseek(fd, 123, SEEK_SET);
  return fd;
}

/** What a memfd carries across a live update: its bytes, size, position and seals. */
async function readMemfd(process: Process, fd: number): Promise<unknown> {
  const pos = await process.lseek(fd, 0, SEEK_CUR);
  const size = await process.lseek(fd, 0, SEEK_END);
  await process.lseek(fd, pos, SEEK_SET);
  return {
    size,
    pos,
    seals: await process.fcntl(fd, F_GET_SEALS),
    bytes: await process.pread(fd, size, 0),
  };
}

for (const { handlerCompatible, module } of builds) {
  const machine = { handlerCompatible, modules: [module], moduleBase: import.meta.url };
  describeConformance({
    ...machine,
    name: `${handlerCompatible} conformance`,
    createFile: createMemfd,
    readContent: readMemfd,
    async mutate(process, fd) {
      // Inside the frozen size, in what was a hole before preserve filled it.
      await process.pwrite(fd, pattern(PAGE_SIZE + 5, 3), 2 * PAGE_SIZE);
    },
  });

  runHandlerCases({
    ...machine,
    name: `${handlerCompatible} cases`,
    readContent: readMemfd,
    preservable: [
      handlerCase({ name: 'an empty memfd', setup: ({ process }) => process.memfdCreate('empty') }),
      handlerCase({
        name: 'a memfd that is only a hole',
        async setup({ process }) {
          const fd = await process.memfdCreate('hole');
          await process.ftruncate(fd, 3 * PAGE_SIZE);
          return fd;
        },
      }),
    ],
    refused: [
      handlerCase({
        name: 'a hugetlb memfd, which no handler takes',
        setup: ({ process }) => process.memfdCreate('huge', MFD_HUGETLB),
        errno: 'ENOENT',
      }),
    ],
    failing: [
      handlerCase({
        name: 'growing a preserved memfd',
        async setup({ process, session }) {
          const fd = await process.memfdCreate('frozen');
          await process.pwrite(fd, pattern(100, 4), 0);
          await session.preserveFd(fd, 1n);
          return fd;
        },
        op: ({ process }, fd: number) => process.ftruncate(fd, 2 * PAGE_SIZE),
        errno: 'EPERM',
      }),
      handlerCase({
        name: 'writing past the end of a preserved memfd',
        async setup({ process, session }) {
          const fd = await process.memfdCreate('frozen');
          await session.preserveFd(fd, 1n);
          return fd;
        },
        op: ({ process }, fd: number) => process.pwrite(fd, pattern(10, 5), 0),
        errno: 'EPERM',
      }),
    ],
  });
}
