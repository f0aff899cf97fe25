import { PAGE_SIZE } from '@liveupdate/machine';
import { handlerCase, runHandlerCases } from '@liveupdate/testkit';
import {
  RINGBUF_IOC_STATS,
  RINGBUF_LUO_FH_COMPATIBLE,
  RINGBUF_OVERWRITE,
  ringbufCreate,
  ringbufStatsArg,
} from '@liveupdate/example-ringbuf';
import { KiB, MiB, RINGBUF_MODULE, append, consume, readRingContent, record } from './helpers.js';

/** 1000-byte records take 1008 bytes: four fill most of a 4 KiB buffer. */
const big = (n: number) => record(n, 1000);

runHandlerCases({
  name: 'ringbuf-v1 cases',
  handlerCompatible: RINGBUF_LUO_FH_COMPATIBLE,
  modules: [RINGBUF_MODULE],
  moduleBase: import.meta.url,
  readContent: readRingContent,
  preservable: [
    handlerCase({
      name: 'an empty buffer',
      setup: ({ process }) => ringbufCreate(process, 4 * KiB),
    }),
    handlerCase({
      name: 'a buffer with consumed and unread records',
      async setup({ process }) {
        const fd = await ringbufCreate(process, 16 * KiB);
        await append(
          process,
          fd,
          [1, 2, 3, 4].map((n) => record(n)),
        );
        await consume(process, fd, 2);
        return fd;
      },
    }),
    handlerCase({
      name: 'a buffer that wrapped around, a record split across its end',
      async setup({ process }) {
        const fd = await ringbufCreate(process, 4 * KiB);
        await append(process, fd, [1, 2, 3, 4].map(big));
        await consume(process, fd, 2);
        await append(process, fd, [5, 6].map(big));
        return fd;
      },
    }),
    handlerCase({
      name: 'an overwrite-mode buffer that dropped records',
      async setup({ process }) {
        const fd = await ringbufCreate(process, 4 * KiB, RINGBUF_OVERWRITE);
        await append(process, fd, [1, 2, 3, 4, 5, 6].map(big));
        return fd;
      },
    }),
    handlerCase({
      name: 'the largest buffer ringbuf-v1 takes, one 4 MiB folio',
      async setup({ process }) {
        const fd = await ringbufCreate(process, 4 * MiB);
        await append(process, fd, [record(1, 64 * KiB)]);
        return fd;
      },
    }),
  ],
  refused: [
    handlerCase({
      name: 'a buffer of two folios (8 MiB), which ringbuf-v1 cannot describe',
      setup: ({ process }) => ringbufCreate(process, 8 * MiB),
      errno: 'EFBIG',
    }),
  ],
  failing: [
    handlerCase({
      name: 'ringbuf_create with an unknown flag',
      setup: async () => undefined,
      op: ({ process }) => ringbufCreate(process, 4 * KiB, 0x4),
      errno: 'EINVAL',
    }),
    handlerCase({
      name: 'ringbuf_create of a size that is not a power of two',
      setup: async () => undefined,
      op: ({ process }) => ringbufCreate(process, 5000),
      errno: 'EINVAL',
    }),
    handlerCase({
      name: 'ringbuf_create of less than a page',
      setup: async () => undefined,
      op: ({ process }) => ringbufCreate(process, 2 * KiB),
      errno: 'EINVAL',
    }),
    handlerCase({
      name: 'ringbuf_create of more than 16 MiB',
      setup: async () => undefined,
      op: ({ process }) => ringbufCreate(process, 32 * MiB),
      errno: 'E2BIG',
    }),
    handlerCase({
      name: 'a record larger than the buffer',
      setup: ({ process }) => ringbufCreate(process, 4 * KiB),
      // 8 bytes of header: 4088 is the largest record of a 4 KiB buffer.
      op: ({ process }, fd: number) => process.write(fd, new Uint8Array(4089)),
      errno: 'E2BIG',
    }),
    handlerCase({
      name: 'a record into a full buffer',
      async setup({ process }) {
        const fd = await ringbufCreate(process, 4 * KiB);
        await append(process, fd, [1, 2, 3, 4].map(big));
        return fd;
      },
      op: ({ process }, fd: number) => append(process, fd, [big(5)]),
      errno: 'EAGAIN',
    }),
    handlerCase({
      name: 'reading an empty buffer',
      setup: ({ process }) => ringbufCreate(process, 4 * KiB),
      op: ({ process }, fd: number) => process.read(fd, 4096),
      errno: 'EAGAIN',
    }),
    handlerCase({
      name: 'reading a record into a shorter buffer',
      async setup({ process }) {
        const fd = await ringbufCreate(process, 4 * KiB);
        await append(process, fd, [record(1, 50)]);
        return fd;
      },
      op: ({ process }, fd: number) => process.read(fd, 49),
      errno: 'EINVAL',
    }),
    handlerCase({
      name: 'pread: a ring buffer has no offsets',
      setup: ({ process }) => ringbufCreate(process, 4 * KiB),
      op: ({ process }, fd: number) => process.pread(fd, 16, 0),
      errno: 'ESPIPE',
    }),
    handlerCase({
      name: 'mapping past the end of the buffer',
      setup: ({ process }) => ringbufCreate(process, 4 * KiB),
      op: ({ process }, fd: number) => process.mmap(fd, 2 * PAGE_SIZE),
      errno: 'EINVAL',
    }),
    handlerCase({
      name: 'an ioctl other than RINGBUF_IOC_STATS',
      setup: ({ process }) => ringbufCreate(process, 4 * KiB),
      op: ({ process }, fd: number) => process.ioctl(fd, RINGBUF_IOC_STATS + 1, new Uint8Array(64)),
      errno: 'ENOTTY',
    }),
    handlerCase({
      name: 'RINGBUF_IOC_STATS with a size smaller than struct ringbuf_stats',
      setup: ({ process }) => ringbufCreate(process, 4 * KiB),
      op: ({ process }, fd: number) => {
        const arg = new Uint8Array(ringbufStatsArg.size);
        arg[0] = 8;
        return process.ioctl(fd, RINGBUF_IOC_STATS, arg);
      },
      errno: 'EINVAL',
    }),
    handlerCase({
      name: 'RINGBUF_IOC_STATS without an argument',
      setup: ({ process }) => ringbufCreate(process, 4 * KiB),
      op: ({ process }, fd: number) => process.ioctl(fd, RINGBUF_IOC_STATS),
      errno: 'EFAULT',
    }),
  ],
});
