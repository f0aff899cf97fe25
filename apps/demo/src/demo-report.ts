import type { KexecCheckReport } from '@liveupdate/core';
import type { DemoOptions } from './demo-options.js';
import type { DemoVerdict } from './demo-verdict.js';
import type { HandoverFormats } from './handover-formats.js';
import type { HostCheck } from './host-check.js';
import type { HostFacts } from './host-facts.js';
import type { KernelMemory } from './kernel-memory.js';
import type { CacheLiveUpdate, LiveUpdatePhases } from './live-update-cache.js';
import type { RefusedLiveUpdate } from './live-update-attempt.js';
import type { NicCounters, VmDmaReport, VmLiveUpdate } from './live-update-host.js';
import type { MemcachedFigures } from './memcached-accounting.js';
import type { GuestMemoryCheck } from './vm-guest-memory.js';
import type { VmRestoreTimings } from './vm-process.js';
import type { GuestRingCheck } from './vm-ring-check.js';

/** A live update that happened, as the demo saw it: both services' sides and the checks after. */
export interface UpdatedStep {
  readonly outcome: 'updated';
  readonly check: KexecCheckReport;
  readonly update: CacheLiveUpdate;
  readonly vm: VmLiveUpdate;
  readonly formats: HandoverFormats;
  /** The LUO ABI written (`luo-v2` or `luo-v1`), from the handover. */
  readonly luo: string;
  readonly host: HostCheck;
  /** What the new kernel remembers of this update (`/sys/kernel/liveupdate/`). */
  readonly kernel: KernelMemory;
}

/** A live update the running kernel refused, and the checks made after it. */
export interface RefusedStep {
  readonly outcome: 'refused';
  readonly check: KexecCheckReport;
  readonly refusal: RefusedLiveUpdate;
  readonly host: HostCheck;
  /** What the NIC did from the refusal until the checks were done. */
  readonly dmaAfterRefusal: NicActivity;
}

export type DemoStep = UpdatedStep | RefusedStep;

/** A difference of the NIC's hardware counters. */
export interface NicActivity {
  readonly packetsDelivered: number;
  readonly packetsDropped: number;
  readonly iommuFaults: number;
}

/** The NIC's counters from `before` to `after`. */
export function nicActivity(before: NicCounters, after: NicCounters): NicActivity {
  return {
    packetsDelivered: after.packets - before.packets,
    packetsDropped: after.drops - before.drops,
    iommuFaults: after.faults - before.faults,
  };
}

interface CacheReport {
  readonly keys: number;
  readonly verified: number;
  readonly mismatches: number;
}

/** One live update that happened, in the JSON report. */
interface UpdatedReport {
  readonly from: string;
  readonly to: string;
  readonly outcome: 'updated';
  readonly reason: null;
  /** The compatible of each preserved file as written (`session/token`), from the handover. */
  readonly formats: HandoverFormats;
  /** The LUO ABI written, `luo-v2` or `luo-v1` (the first the target reads), from the handover. */
  readonly luo: string;
  readonly blackoutMs: number;
  readonly untilKernelRunningMs: number;
  readonly phases: Readonly<Record<keyof LiveUpdatePhases | 'other', number>>;
  readonly cache: CacheReport;
  readonly vm: {
    readonly blackoutMs: number;
    readonly guestPausedMs: number;
    readonly preserveMs: number;
    readonly phases: Readonly<Record<keyof VmRestoreTimings, number>>;
    readonly ring: GuestRingCheck;
    readonly guestMemory: GuestMemoryCheck;
  };
  readonly dma: VmDmaReport;
  /** What the new kernel remembers of this update, read from `/sys/kernel/liveupdate/`. */
  readonly kernel: KernelMemory;
}

/** One live update refused before the blackout, in the JSON report. */
interface RefusedReport {
  readonly from: string;
  readonly to: string;
  readonly outcome: 'refused';
  /** What the target could not read: the problem lines of `LIVEUPDATE_IOCTL_CHECK_KEXEC`. */
  readonly reason: readonly string[];
  /** Nothing was written. */
  readonly formats: HandoverFormats;
  readonly luo: null;
  /** The errno `reboot(LINUX_REBOOT_CMD_KEXEC)` failed with. */
  readonly errno: string;
  /** The cache's keys and the VM, checked after the refusal in the kernel that stayed. */
  readonly cache: CacheReport;
  readonly vm: { readonly ring: GuestRingCheck; readonly guestMemory: GuestMemoryCheck };
  readonly dmaAfterRefusal: NicActivity;
}

export type LiveUpdateReport = UpdatedReport | RefusedReport;

/**
 * Version of the JSON report's shape, `report.schema.json`: raised when a field changes meaning
 * or goes away, not when one is added.
 */
export const REPORT_SCHEMA_VERSION = 4;

/**
 * Every option as parsed, but `--help` (which prints no report); `memcached` only when it was
 * given, so a run without it reports the settings it always did.
 */
export type DemoSettings = Omit<DemoOptions, 'help' | 'memcached'> & { readonly memcached?: true };

/** The settings of a run, for its report and its trace. */
export function demoSettings(options: DemoOptions): DemoSettings {
  const { scenario, mib, keys, guestMib, updates, json, quiet, explain, trace, report } = options;
  return {
    scenario,
    mib,
    keys,
    guestMib,
    updates,
    json,
    quiet,
    explain,
    trace,
    report,
    ...(options.memcached && { memcached: true as const }),
  };
}

/** The JSON report, `pnpm demo --json`. */
export interface DemoReport {
  readonly schemaVersion: typeof REPORT_SCHEMA_VERSION;
  readonly settings: DemoSettings;
  readonly host: HostFacts;
  readonly verdict: DemoVerdict;
  /** What the reader should know to read the figures, e.g. that the first update was cold. */
  readonly notes: readonly string[];
  readonly liveUpdates: readonly LiveUpdateReport[];
  /**
   * With `--memcached`: what the host's memcached clients saw over the whole run, from before the
   * first live update to after the last (docs/memcached.md, "The demo's figures").
   */
  readonly memcached?: MemcachedFigures;
}

/** The whole report of a run; `memcached` only with `--memcached`. */
export function demoReport(
  options: DemoOptions,
  host: HostFacts,
  verdict: DemoVerdict,
  notes: readonly string[],
  liveUpdates: readonly LiveUpdateReport[],
  memcached?: MemcachedFigures,
): DemoReport {
  return {
    schemaVersion: REPORT_SCHEMA_VERSION,
    settings: demoSettings(options),
    host,
    verdict,
    notes,
    liveUpdates,
    ...(memcached && { memcached: { ...memcached, outageMs: ms(memcached.outageMs) } }),
  };
}

const ms = (value: number): number => Number(value.toFixed(3));

function msRecord<K extends string>(record: Readonly<Record<K, number>>): Record<K, number> {
  return Object.fromEntries(
    Object.entries<number>(record).map(([name, value]) => [name, ms(value)]),
  ) as Record<K, number>;
}

/** The `liveUpdates` entry of one step; `keys` is the number of keys in the cache. */
export function liveUpdateReport(step: DemoStep, keys: number): LiveUpdateReport {
  const { host } = step;
  const cache = { keys, verified: host.cache.verified, mismatches: host.cache.mismatches };
  if (step.outcome === 'refused') {
    return {
      from: step.refusal.from,
      to: step.refusal.to,
      outcome: 'refused',
      reason: step.check.problems,
      formats: {},
      luo: null,
      errno: step.refusal.code,
      cache,
      vm: { ring: host.ring, guestMemory: host.guestMemory },
      dmaAfterRefusal: step.dmaAfterRefusal,
    };
  }
  const { update, vm } = step;
  return {
    from: update.from,
    to: update.to,
    outcome: 'updated',
    reason: null,
    formats: step.formats,
    luo: step.luo,
    blackoutMs: ms(update.blackoutMs),
    untilKernelRunningMs: ms(update.untilKernelRunningMs),
    phases: msRecord({ ...update.phases, other: update.otherMs }),
    cache,
    vm: {
      blackoutMs: ms(vm.blackoutMs),
      guestPausedMs: ms(vm.guestPausedMs),
      preserveMs: ms(vm.preserveMs),
      phases: msRecord(vm.phases),
      ring: host.ring,
      guestMemory: host.guestMemory,
    },
    dma: vm.dma,
    kernel: {
      ...step.kernel,
      previousPhasesMs: msRecord(step.kernel.previousPhasesMs),
    },
  };
}
