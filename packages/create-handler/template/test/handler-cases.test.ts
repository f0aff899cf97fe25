// This handler's own cases, each on a machine of its own: files that must cross and come back
// equal, files PRESERVE_FD must refuse, operations that must fail and change nothing.
import { LiveUpdateDevice } from '@liveupdate/core';
import { O_RDONLY, O_RDWR, O_WRONLY, type Process } from '@liveupdate/machine';
import { handlerCase, runHandlerCases, type FailingCase } from '@liveupdate/testkit';
import { VALUE_LUO_COMPATIBLE, VALUE_MAX } from '../src/index.js';
import { MODULE, openValue, readValueContent } from './helpers.js';

const encoder = new TextEncoder();

runHandlerCases({
  name: '__NAME__-v1 cases',
  handlerCompatible: VALUE_LUO_COMPATIBLE,
  modules: [MODULE],
  moduleBase: import.meta.url,
  readContent: readValueContent,
  preservable: [
    handlerCase({
      name: 'an empty value',
      setup: ({ process }) => openValue(process),
    }),
    handlerCase({
      name: 'a value that fills its page',
      setup: ({ process }) => openValue(process, 'v'.repeat(VALUE_MAX)),
    }),
    handlerCase({
      name: 'a file opened read-only, which comes back read-only',
      setup: ({ process }) => openValue(process, undefined, O_RDONLY),
    }),
    handlerCase({
      name: 'a file opened write-only, which comes back write-only',
      setup: ({ process }) => openValue(process, undefined, O_WRONLY),
    }),
  ],
  refused: [
    handlerCase({
      name: '/dev/null, which no handler takes',
      setup: ({ process }) => process.open('/dev/null', O_RDWR),
      errno: 'ENOENT',
    }),
  ],
  // A failing case's type argument is what its setup hands to op (unknown by default).
  failing: [
    handlerCase<FailingCase<number>>({
      name: 'a write past the page',
      setup: ({ process }) => openValue(process, 'full'),
      op: ({ process }, fd) => process.pwrite(fd, encoder.encode('x'), VALUE_MAX),
      errno: 'ENOSPC',
    }),
    handlerCase<FailingCase<{ next: Process; fd: number }>>({
      name: 'a write to a read-only file after the live update',
      async setup({ harness, process, session }) {
        await session.preserveFd(await openValue(process, undefined, O_RDONLY), 1n);
        const next = await harness.liveUpdate();
        const incoming = await (await LiveUpdateDevice.open(next)).retrieveSession('case');
        const fd = await incoming.retrieveFd(1n);
        await incoming.finish();
        return { next, fd };
      },
      op: (_context, { next, fd }) => next.write(fd, encoder.encode('x')),
      errno: 'EBADF',
    }),
  ],
});
