import { EFD_CLOEXEC, EFD_NONBLOCK, EFD_SEMAPHORE, O_RDWR } from '@liveupdate/machine';
import { handlerCase, runHandlerCases } from '@liveupdate/testkit';
import { EVENTFD_LUO_FH_COMPATIBLE } from '@liveupdate/plugin-eventfd';
import { EVENTFD_MODULE, add, readEventfdContent, take } from './helpers.js';

/** The highest counter a write can leave: `2^64 - 2`. */
const HIGHEST_WRITTEN = 0xffff_ffff_ffff_fffen;

runHandlerCases({
  name: 'eventfd-v1 cases',
  handlerCompatible: EVENTFD_LUO_FH_COMPATIBLE,
  modules: [EVENTFD_MODULE],
  moduleBase: import.meta.url,
  readContent: readEventfdContent,
  preservable: [
    handlerCase({
      name: 'a zero counter',
      setup: ({ process }) => process.eventfd(0, EFD_NONBLOCK),
    }),
    handlerCase({
      name: 'the largest initval, 2^32 - 1',
      setup: ({ process }) => process.eventfd(0xffff_ffff, EFD_NONBLOCK),
    }),
    handlerCase({
      name: 'a counter past 2^53, which no JS number holds exactly',
      async setup({ process }) {
        const fd = await process.eventfd(0, EFD_NONBLOCK);
        await add(process, fd, 2n ** 53n + 1n);
        return fd;
      },
    }),
    handlerCase({
      name: 'the highest counter a write leaves, 2^64 - 2',
      async setup({ process }) {
        const fd = await process.eventfd(0, EFD_NONBLOCK);
        await add(process, fd, HIGHEST_WRITTEN);
        return fd;
      },
    }),
    handlerCase({
      name: 'a semaphore holding 3',
      setup: ({ process }) => process.eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK),
    }),
    handlerCase({
      name: 'a close-on-exec eventfd (an fd flag: the file crosses all the same)',
      setup: ({ process }) => process.eventfd(7, EFD_CLOEXEC | EFD_NONBLOCK),
    }),
    handlerCase({
      name: 'an eventfd partly consumed before PRESERVE_FD',
      async setup({ process }) {
        const fd = await process.eventfd(5, EFD_SEMAPHORE | EFD_NONBLOCK);
        await take(process, fd);
        return fd;
      },
    }),
  ],
  refused: [
    handlerCase({
      name: '/dev/null, which is no eventfd',
      setup: ({ process }) => process.open('/dev/null', O_RDWR),
      errno: 'ENOENT',
    }),
  ],
  failing: [
    handlerCase({
      name: 'the same eventfd through a dup, under another token',
      async setup({ process, session }) {
        const fd = await process.eventfd(1, EFD_NONBLOCK);
        await session.preserveFd(fd, 1n);
        return process.dup(fd);
      },
      op: ({ session }, fd: number) => session.preserveFd(fd, 2n),
      errno: 'EBUSY',
    }),
    handlerCase({
      name: 'eventfd2 with an unknown flag',
      setup: async () => undefined,
      op: ({ process }) => process.eventfd(0, 0x2),
      errno: 'EINVAL',
    }),
    handlerCase({
      name: 'a write of 2^64 - 1',
      setup: ({ process }) => process.eventfd(0, EFD_NONBLOCK),
      op: ({ process }, fd: number) => add(process, fd, 0xffff_ffff_ffff_ffffn),
      errno: 'EINVAL',
    }),
    handlerCase({
      name: 'a write past 2^64 - 2 without waiting',
      async setup({ process }) {
        const fd = await process.eventfd(1, EFD_NONBLOCK);
        await add(process, fd, HIGHEST_WRITTEN - 1n);
        return fd;
      },
      op: ({ process }, fd: number) => add(process, fd, 1n),
      errno: 'EAGAIN',
    }),
    handlerCase({
      name: 'a read of a zero counter without waiting',
      setup: ({ process }) => process.eventfd(0, EFD_NONBLOCK),
      op: ({ process }, fd: number) => take(process, fd),
      errno: 'EAGAIN',
    }),
    handlerCase({
      name: 'a read of fewer than 8 bytes',
      setup: ({ process }) => process.eventfd(1, EFD_NONBLOCK),
      op: ({ process }, fd: number) => process.read(fd, 7),
      errno: 'EINVAL',
    }),
  ],
});
