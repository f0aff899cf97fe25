import type { DeviceSpec, Machine, Process } from '@liveupdate/machine';
import type { Random } from './random.js';

/** What a scenario found after the damaged update: what came back wrong, and what failed. */
export interface Verdict {
  /** What a successful retrieve returned different from what was preserved. */
  readonly misread: string[];
  /** What failed with an errno, as `what: ERRNO`. */
  readonly failed: string[];
}

/**
 * What one damaged update preserves in the old kernel and verifies in the new one. Each
 * {@link MutationFamily} names the scenario whose handover it damages.
 */
export interface Scenario<Preserved = unknown> {
  readonly name: string;
  /** Modules both kernels load after LUO. */
  readonly modules: readonly string[];
  /** PCI devices of the machine. */
  readonly devices?: readonly DeviceSpec[];
  /** In the old kernel: create and preserve everything; say what was preserved. */
  preserve(process: Process, random: Random): Promise<Preserved>;
  /**
   * In the new kernel: retrieve everything and compare it with what was preserved. Throws only
   * on a host failure; a `MachineHaltedError` means the new kernel panicked.
   */
  verify(process: Process, preserved: Preserved, machine: Machine): Promise<Verdict>;
}
