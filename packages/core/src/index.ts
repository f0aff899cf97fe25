/**
 * The Live Update Orchestrator's public API: the file-handler contract, the uAPI and `luo-v1`
 * ABI codecs, and the typed `/dev/liveupdate` client. The orchestrator itself is the kernel
 * module `@liveupdate/core/module`.
 *
 * @module @liveupdate/core
 */
export {
  LIVEUPDATE_HNDL_COMPAT_LENGTH,
  defineHandler,
  handlerReads,
  handlerWrites,
  handoverReads,
  type FileHandler,
  type FileId,
  type FileOpArgs,
  type LiveUpdateFileSession,
} from './file-handler.js';
export { defineFlb, type FlbOp, type FlbOpArgs, type LiveUpdateFlb } from './liveupdate-flb.js';
export type { FlbRegistry } from './flb-registry.js';
export type { FaultInjector, HandlerOp } from './fault-injector.js';
export * from './struct-codec.js';
export {
  LIVEUPDATE_SERVICE,
  flbGetIncoming,
  flbGetOutgoing,
  registerFileHandler,
  registerFlb,
  unregisterFileHandler,
} from './liveupdate-service.js';
export type { LiveUpdateOrchestrator, LuoLimits, LuoOptions } from './live-update-orchestrator.js';
export type { FileHandlerRegistry } from './file-handler-registry.js';
export * from './liveupdate-uapi.js';
export * from './luo-abi.js';
export {
  LIVEUPDATE_DEVICE_PATH,
  LiveUpdateDevice,
  type KexecCheckReport,
} from './client/live-update-device.js';
export { LiveUpdateSession } from './client/live-update-session.js';
export { restoreSerializedFolio, serializedDataAddress } from './serialized-data.js';
