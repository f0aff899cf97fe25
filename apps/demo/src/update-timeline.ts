import type { Machine, TimelineSpan } from '@liveupdate/machine';
import { CACHE_RETRIEVE_PHASES } from './cache-process.js';
import { lapsEndingAt, lapsStartingAt } from './demo-trace.js';
import type { UpdatedStep } from './demo-report.js';
import type { NicSample } from './nic-sampler.js';
import { VM_AFTER_RESUME_PHASES, VM_BLACKOUT_PHASES } from './vm-process.js';

/** Who a bar of the timeline belongs to: the kernels (and machine), the new cache, the new VMM. */
export type TimelineLane = 'kernel' | 'cache' | 'vmm';

/** One phase of a live update as a bar: milliseconds since the old kernel's `reboot` began. */
export interface TimelineBar {
  readonly lane: TimelineLane;
  /** The phase's name in the JSON report: `phases` for `kernel` and `cache`, `vm.phases` for `vmm`. */
  readonly name: string;
  readonly start: number;
  readonly end: number;
}

/** A stretch of time, in milliseconds since the old kernel's `reboot` began. */
export interface TimelineInterval {
  readonly start: number;
  readonly end: number;
}

/**
 * What the HTML report draws of one live update, on one time axis whose 0 is the old kernel's
 * `reboot`: each phase as a bar, the blackouts, and the NIC's packets per millisecond.
 */
export interface UpdateTimeline {
  readonly from: string;
  readonly to: string;
  /** Every phase of the report's `phases` (but `other`, which is what no bar covers) and `vm.phases`. */
  readonly bars: readonly TimelineBar[];
  /** `reboot` → the new cache answered its first key (`blackoutMs`). */
  readonly cacheBlackout: TimelineInterval;
  /** `reboot` → the guest's first poll (`vm.blackoutMs`). */
  readonly vmBlackout: TimelineInterval;
  /** The guest's own pause (`vm.guestPausedMs`). */
  readonly guestPaused: TimelineInterval;
  /**
   * The NIC's delivery rate, from its `packets` counter sampled about every millisecond: at each
   * `time`, the packets delivered since the sample before divided by the time between them.
   */
  readonly nic: { readonly time: readonly number[]; readonly packetsPerMs: readonly number[] };
}

/** Milliseconds of NIC samples shown either side of the update's bars. */
const MARGIN_MS = 20;

const KERNEL_PHASES_OF_OLD = ['reboot-notifiers', 'kho-finalize'] as const;
const KERNEL_PHASES_OF_NEW = ['boot', 'memory-init', 'modules-init'] as const;

const round = (value: number): number => Number(value.toFixed(3));

/**
 * The timeline of one live update, from the machine's trace spans (the kernels' phases and the
 * machine's `kexec-handoff`), the new processes' stopwatch laps (which end when the cache answered
 * its first key and when the guest polled) and the NIC's samples. Throws if the machine's timeline
 * lacks a span the update's report has a phase for.
 */
export function updateTimeline(
  machine: Machine,
  step: UpdatedStep,
  samples: readonly NicSample[],
): UpdateTimeline {
  const { update, vm } = step;
  const origin = update.rebootStart;
  const reboot = machine
    .spans({ name: 'reboot' })
    .find((span) => span.version !== 'machine' && span.start === origin);
  if (!reboot) throw new Error(`the timeline has no reboot span starting at ${origin} ms`);
  const span = (boot: number, name: string, machineSpan = false): TimelineSpan => {
    // The last of a name: a reboot refused before the blackout leaves an earlier one.
    const found = machine
      .spans({ boot, name })
      .findLast((s) => (s.version === 'machine') === machineSpan);
    if (!found) throw new Error(`the timeline has no span "${name}" of boot ${boot}`);
    return found;
  };
  const kernelBar = (s: TimelineSpan): TimelineBar => ({
    lane: 'kernel',
    name: s.name,
    start: round(s.start - origin),
    end: round(s.end - origin),
  });
  const firstKeyAt = origin + update.blackoutMs;
  const resumedAt = origin + vm.blackoutMs;
  const toBars = (lane: TimelineLane, spans: ReturnType<typeof lapsEndingAt>): TimelineBar[] =>
    spans.map((lap) => ({
      lane,
      name: lap.name,
      start: round(lap.start - origin),
      end: round(lap.end - origin),
    }));
  const { phases } = update;
  const bars = [
    ...KERNEL_PHASES_OF_OLD.map((name) => kernelBar(span(reboot.boot, name))),
    kernelBar(span(reboot.boot, 'kexec-handoff', true)),
    ...KERNEL_PHASES_OF_NEW.map((name) => kernelBar(span(reboot.boot + 1, name))),
    ...toBars(
      'cache',
      lapsEndingAt(
        'cache',
        firstKeyAt,
        CACHE_RETRIEVE_PHASES.map((name) => [name, phases[name]]),
      ),
    ),
    ...toBars(
      'vmm',
      lapsEndingAt(
        'vmm',
        resumedAt,
        VM_BLACKOUT_PHASES.map((name) => [name, vm.phases[name]]),
      ),
    ),
    ...toBars(
      'vmm',
      lapsStartingAt(
        'vmm',
        resumedAt,
        VM_AFTER_RESUME_PHASES.map((name) => [name, vm.phases[name]]),
      ),
    ),
  ];
  const first =
    Math.min(...bars.map((bar) => bar.start), vm.blackoutMs - vm.guestPausedMs) + origin;
  const last = Math.max(...bars.map((bar) => bar.end)) + origin;
  return {
    from: update.from,
    to: update.to,
    bars,
    cacheBlackout: { start: 0, end: round(update.blackoutMs) },
    vmBlackout: { start: 0, end: round(vm.blackoutMs) },
    guestPaused: { start: round(vm.blackoutMs - vm.guestPausedMs), end: round(vm.blackoutMs) },
    nic: packetsPerMs(samples, first - MARGIN_MS, last + MARGIN_MS, origin),
  };
}

/** The delivery rate between consecutive samples in `[from, to]` (machine time), at `origin` 0. */
function packetsPerMs(
  samples: readonly NicSample[],
  from: number,
  to: number,
  origin: number,
): UpdateTimeline['nic'] {
  const time: number[] = [];
  const rate: number[] = [];
  for (let i = 1; i < samples.length; i++) {
    const before = samples[i - 1]!;
    const sample = samples[i]!;
    if (sample.time < from || sample.time > to || sample.time <= before.time) continue;
    time.push(round(sample.time - origin));
    rate.push(round((sample.delivered - before.delivered) / (sample.time - before.time)));
  }
  return { time, packetsPerMs: rate };
}
