/**
 * Test harness for Live Update Orchestrator file handlers: boot a simulated machine with LUO on,
 * live-update it, and check what the next kernel receives; the conformance suite, the table
 * tester for a handler's own cases, the version matrix, fault injection and leak accounting.
 *
 * @module @liveupdate/testkit
 */
export {
  LIVEUPDATE_CMDLINE,
  liveUpdateImage,
  type LiveUpdateImageOptions,
} from './live-update-image.js';
export {
  DEFAULT_HARNESS_RAM_BYTES,
  DEFAULT_HARNESS_VERSION,
  LiveUpdateHarness,
  bootForLiveUpdate,
  type BootForLiveUpdateOptions,
} from './live-update-harness.js';
export { errnoOf } from './errno-of.js';
export {
  downgradeToLuoV1,
  findLuoFile,
  luoFdtLocation,
  rawLuoHandover,
  readLuoFdt,
  sealLuoHandover,
  type LuoHandoverFile,
  type RawLuoFlb,
  type RawLuoSession,
} from './luo-handover-bytes.js';
// The KHO level's seal is the kernel's (its own tests use it); re-exported beside LUO's.
export { sealKhoHandover } from '@liveupdate/kernel';
export { twoStage, type TwoStageOptions } from './two-stage.js';
export {
  LEAK_STATS,
  TESTKIT_STAT_NAMES,
  statsDifferences,
  testkitStats,
  type TestkitStat,
  type TestkitStats,
} from './testkit-stats.js';
export {
  FAULT_OPS,
  FLB_FAULT_OPS,
  clearFault,
  faultStatus,
  injectFault,
  type FaultKind,
  type FaultSpec,
  type FlbFaultSpec,
  type HandlerFaultSpec,
  type FaultStatus,
  type InjectedFault,
} from './fault-injection.js';
export {
  describeHandler,
  probeCanPreserve,
  sameFile,
  type CanPreserveProbe,
  type HandlerDescription,
} from './testkit-probes.js';
export { HANDLER_MACHINE_RAM_BYTES, type HandlerMachineOptions } from './handler-machine.js';
export {
  CONFORMANCE_LAWS,
  checkConformanceLaw,
  type ConformanceFiles,
  type ConformanceLaw,
  type ConformanceLawId,
  type ConformanceOptions,
  type ConformanceSessionFiles,
  type ConformanceVerdict,
} from './conformance-laws.js';
export { describeConformance } from './describe-conformance.js';
export {
  checkHandlerCase,
  checkHandlerCases,
  handlerCase,
  type FailingCase,
  type HandlerCaseContext,
  type HandlerCaseEntry,
  type HandlerCaseKind,
  type HandlerCaseVerdict,
  type HandlerCasesOptions,
  type PreservableCase,
  type RefusedCase,
} from './handler-cases.js';
export { runHandlerCases } from './run-handler-cases.js';
export {
  checkVersionMatrix,
  checkVersionPair,
  formatVersionMatrix,
  type HandlerVersion,
  type VersionMatrixOptions,
  type VersionMatrixReport,
  type VersionPairExpectation,
  type VersionPairOutcome,
  type VersionPairVerdict,
} from './version-matrix.js';
export { describeVersionMatrix } from './describe-version-matrix.js';
export type { CallSite } from './call-site.js';
