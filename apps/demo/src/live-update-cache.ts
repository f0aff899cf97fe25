import type { LuoAgent } from '@liveupdate/agent';
import type { KernelImage, Machine } from '@liveupdate/machine';
import {
  CACHE_RETRIEVE_PHASES,
  type CacheProcess,
  type CacheRetrieveTimings,
} from './cache-process.js';
import { liveUpdateHost, type HostLiveUpdate } from './live-update-host.js';
import type { KexecPhases } from './phase-timings.js';

/** Milliseconds of every phase of one live update, kernel side then the new cache's side. */
export type LiveUpdatePhases = KexecPhases & CacheRetrieveTimings;

/** Phases that follow one another inside the blackout (`memory-init`, `modules-init` are in `boot`). */
export const BLACKOUT_PHASES = [
  'reboot-notifiers',
  'kho-finalize',
  'kexec-handoff',
  'boot',
  ...CACHE_RETRIEVE_PHASES,
] as const satisfies readonly (keyof LiveUpdatePhases)[];

/** What {@link liveUpdateCache} measured. */
export interface CacheLiveUpdate {
  readonly from: string;
  readonly to: string;
  /** Machine time at which the old kernel's `reboot` span began: the blackout's start. */
  readonly rebootStart: number;
  /** The old kernel's `reboot` span begins → the new cache process answers its first key. */
  readonly blackoutMs: number;
  /** The old kernel's `reboot` span begins → the machine sees the new kernel running. */
  readonly untilKernelRunningMs: number;
  readonly phases: LiveUpdatePhases;
  /**
   * Blackout not covered by {@link BLACKOUT_PHASES}: messages between the kernel workers and the
   * machine, ending the old processes, spawning the new ones.
   */
  readonly otherMs: number;
  /** Before the blackout, while the cache still serves: its `store` with the agent (`PRESERVE_FD`). */
  readonly preserveMs: number;
  /** Then the agent's `prepare` (its manifest), and `kexec_load`. */
  readonly agentPrepareMs: number;
  readonly kexecLoadMs: number;
  /** Whether the first key answered after the update had its value. */
  readonly firstKeyOk: boolean;
  /** The cache process of the new kernel, which holds the retrieved memfd. */
  readonly cacheProcess: CacheProcess;
  /** The agent of the new kernel. */
  readonly agent: LuoAgent;
}

/**
 * Live-update the kernel under `cacheProcess` to `next`, the way DESIGN §4 walks it, with
 * `agent` holding the session: the cache hands its memfd to the agent, which preserves it and its
 * manifest; the agent's process loads the next kernel and reboots into it; a new agent restores
 * the session and a new cache process fetches the memfd from it and answers its first key.
 */
export async function liveUpdateCache(
  machine: Machine,
  agent: LuoAgent,
  cacheProcess: CacheProcess,
  next: KernelImage,
): Promise<CacheLiveUpdate> {
  return cacheLiveUpdateOf(await liveUpdateHost(machine, { agent, cache: cacheProcess }, next));
}

/** The cache's view of a host live update that carried a cache. */
export function cacheLiveUpdateOf(update: HostLiveUpdate): CacheLiveUpdate {
  const { cache } = update;
  if (!cache) throw new Error(`the live update ${update.from} → ${update.to} carried no cache`);
  const phases: LiveUpdatePhases = { ...update.kernelPhases, ...cache.phases };
  const covered = BLACKOUT_PHASES.reduce((sum, name) => sum + phases[name], 0);
  return {
    from: update.from,
    to: update.to,
    rebootStart: update.rebootStart,
    blackoutMs: cache.blackoutMs,
    untilKernelRunningMs: update.untilKernelRunningMs,
    phases,
    otherMs: cache.blackoutMs - covered,
    preserveMs: cache.preserveMs,
    agentPrepareMs: update.agentPrepareMs,
    kexecLoadMs: update.kexecLoadMs,
    firstKeyOk: cache.firstKeyOk,
    cacheProcess: cache.cacheProcess,
    agent: update.agent,
  };
}
