import { describeConformance } from '@liveupdate/testkit';
import { RINGBUF_LUO_FH_COMPATIBLE, ringbufCreate } from '@liveupdate/example-ringbuf';
import { KiB, RINGBUF_MODULE, append, consume, readRingContent, record } from './helpers.js';

let serial = 0;

describeConformance({
  name: 'ringbuf-v1 conformance',
  handlerCompatible: RINGBUF_LUO_FH_COMPATIBLE,
  modules: [RINGBUF_MODULE],
  moduleBase: import.meta.url,
  async createFile(process) {
    const fd = await ringbufCreate(process, 8 * KiB);
    const n = ++serial;
    await append(process, fd, [record(n), record(n + 1, 300)]);
    return fd;
  },
  readContent: readRingContent,
  // What a workload does while its buffer is preserved: the collector reads, the agent appends.
  async mutate(process, fd) {
    await consume(process, fd, 1);
    await append(process, fd, [record(++serial, 1000)]);
  },
});
