import {
  toChromeTrace,
  type ChromeTrace,
  type Machine,
  type TraceCounterSample,
  type TraceTrackSpan,
} from '@liveupdate/machine';
import { CACHE_RETRIEVE_PHASES } from './cache-process.js';
import type { DemoStep, UpdatedStep } from './demo-report.js';
import type { NicSample } from './nic-sampler.js';
import { NIC_BDF, VM_AFTER_RESUME_PHASES, VM_BLACKOUT_PHASES } from './vm-process.js';

/**
 * Spans that follow one another and end at `end` (machine time): the stopwatch laps of a process,
 * each `[name, milliseconds]` in the order they ran, named as in the JSON report's phases.
 */
export function lapsEndingAt(
  track: string,
  end: number,
  laps: [string, number][],
): TraceTrackSpan[] {
  return lapsStartingAt(track, end - laps.reduce((sum, [, ms]) => sum + ms, 0), laps);
}

/** Like {@link lapsEndingAt}, for laps that begin at `start` (machine time). */
export function lapsStartingAt(
  track: string,
  start: number,
  laps: [string, number][],
): TraceTrackSpan[] {
  const spans: TraceTrackSpan[] = [];
  let at = start;
  for (const [name, ms] of laps) {
    spans.push({ track, name, start: at, end: at + ms });
    at += ms;
  }
  return spans;
}

/** Spans of the demo's own processes and of each update's blackouts, which no kernel records. */
function updateSpans(step: UpdatedStep): TraceTrackSpan[] {
  const { update, vm } = step;
  const firstKeyAt = update.rebootStart + update.blackoutMs;
  const resumedAt = update.rebootStart + vm.blackoutMs;
  const track = `live update ${update.from} → ${update.to}`;
  const { phases } = update;
  return [
    { track, name: 'cache blackout', start: update.rebootStart, end: firstKeyAt },
    { track, name: 'VM blackout', start: update.rebootStart, end: resumedAt },
    { track, name: 'guest paused', start: resumedAt - vm.guestPausedMs, end: resumedAt },
    ...lapsEndingAt(
      `cache (pid ${update.cacheProcess.process.pid})`,
      firstKeyAt,
      CACHE_RETRIEVE_PHASES.map((name) => [name, phases[name]]),
    ),
    ...lapsEndingAt(
      `VMM (pid ${vm.vmm.process.pid})`,
      resumedAt,
      VM_BLACKOUT_PHASES.map((name) => [name, vm.phases[name]]),
    ),
    ...lapsStartingAt(
      `VMM (pid ${vm.vmm.process.pid})`,
      resumedAt,
      VM_AFTER_RESUME_PHASES.map((name) => [name, vm.phases[name]]),
    ),
  ];
}

function nicCounters(samples: readonly NicSample[]): TraceCounterSample[] {
  const track = `NIC ${NIC_BDF}`;
  return samples.flatMap((sample): TraceCounterSample[] => [
    {
      track,
      name: 'packets',
      time: sample.time,
      values: { delivered: sample.delivered, dropped: sample.dropped },
    },
    {
      track,
      name: 'ring occupancy',
      time: sample.time,
      values: { descriptors: sample.ringOccupancy },
    },
    { track, name: 'IOMMU faults', time: sample.time, values: { faults: sample.faults } },
  ]);
}

/**
 * The demo's run as a Chrome trace: every kernel of the machine (its spans, log and memory), the
 * machine's kexec handoffs, the new cache's and VMM's steps of each update, each update's
 * blackouts, and the NIC's counters as sampled; `settings` go into its metadata.
 */
export function demoTrace(
  machine: Machine,
  steps: readonly DemoStep[],
  samples: readonly NicSample[],
  settings: Readonly<Record<string, unknown>>,
): ChromeTrace {
  return toChromeTrace(machine.timeline, {
    spans: steps.flatMap((step) => (step.outcome === 'updated' ? updateSpans(step) : [])),
    counters: nicCounters(samples),
    metadata: { demo: '@liveupdate/demo', settings },
  });
}
