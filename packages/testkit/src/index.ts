/**
 * Test harness for Live Update Orchestrator file handlers: boot a simulated machine with LUO on,
 * live-update it, and check what the next kernel receives.
 *
 * @packageDocumentation
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
export { twoStage, type TwoStageOptions } from './two-stage.js';
