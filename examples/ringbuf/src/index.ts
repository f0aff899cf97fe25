/**
 * An in-kernel ring-buffer log and its Live Update Orchestrator file handler, `"ringbuf-v1"`: an
 * example of a third-party handler, written only against the published APIs.
 *
 * @packageDocumentation
 */
export { ringbufModule as default } from './ringbuf-module.js';
export { RingBuffer, recordBytes, type RingBufferCounters } from './ring-buffer.js';
export { ringbufCreate, ringbufStats, type RingbufStats } from './ringbuf-client.js';
export { ringBufferOf, ringbufFileOperations } from './ringbuf-file-operations.js';
export { createRingbufLuoHandler } from './ringbuf-luo-handler.js';
export { RINGBUF_LUO_FH_COMPATIBLE, RINGBUF_LUO_FLAGS, ringbufLuoSer } from './ringbuf-luo-abi.js';
export {
  RINGBUF_ALL_FLAGS,
  RINGBUF_CLOEXEC,
  RINGBUF_IOCTL_TYPE,
  RINGBUF_IOC_STATS,
  RINGBUF_MAX_FOLIO_SIZE,
  RINGBUF_MAX_SIZE,
  RINGBUF_MIN_SIZE,
  RINGBUF_OVERWRITE,
  RINGBUF_RECORD_ALIGN,
  ringbufRecordHeader,
  ringbufStatsArg,
} from './ringbuf-uapi.js';
