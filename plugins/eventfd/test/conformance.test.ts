import { describeConformance } from '@liveupdate/testkit';
import { EFD_NONBLOCK } from '@liveupdate/machine';
import { EVENTFD_LUO_FH_COMPATIBLE } from '@liveupdate/plugin-eventfd';
import { EVENTFD_MODULE, add, readEventfdContent } from './helpers.js';

let serial = 0;

describeConformance({
  name: 'eventfd-v1 conformance',
  handlerCompatible: EVENTFD_LUO_FH_COMPATIBLE,
  modules: [EVENTFD_MODULE],
  moduleBase: import.meta.url,
  // A counter of its own for each file, so that two files are told apart by their content.
  createFile: (process) => process.eventfd(++serial, EFD_NONBLOCK),
  readContent: readEventfdContent,
  // What a workload does while its eventfd is preserved: it keeps signalling.
  mutate: (process, fd) => add(process, fd, 1000n),
});
