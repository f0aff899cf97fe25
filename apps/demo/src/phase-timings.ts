import type { Machine, TimelineSpan } from '@liveupdate/machine';

/** Milliseconds of the kernel-side phases of one kexec, from the kernels' and machine's spans. */
export interface KexecPhases {
  /** Old kernel's `reboot-notifiers`: LUO's notifier freezes and serializes the sessions. */
  readonly 'reboot-notifiers': number;
  /** Old kernel's `kho-finalize`: the KHO memory map and root FDT. */
  readonly 'kho-finalize': number;
  /** Machine's `kexec-handoff`: ending the old worker, the next (preloaded) one is ready. */
  readonly 'kexec-handoff': number;
  /** New kernel's `boot`, which contains `memory-init` and `modules-init`. */
  readonly boot: number;
  readonly 'memory-init': number;
  readonly 'modules-init': number;
}

/** The kexec that started boot `boot`, as the machine's timeline recorded it. */
export interface KexecTimings {
  readonly from: string;
  readonly to: string;
  /** Machine time (ms since it was created) at which the old kernel's `reboot` span began. */
  readonly rebootStart: number;
  /** Machine time of the new kernel's `kernel-running` instant. */
  readonly running: number;
  readonly phases: KexecPhases;
}

/**
 * The phases of the kexec into boot `boot` (≥ 1): the reboot phases are those of the kernel before
 * it (boot - 1), and the machine's `kexec-handoff` span (which carries the old kernel's boot
 * number) sits between them. Throws if the timeline lacks one of them.
 */
export function kexecTimings(machine: Machine, boot: number): KexecTimings {
  // The last span of a name: a reboot refused before the blackout leaves an earlier one.
  const span = (of: number, name: string, source: 'kernel' | 'machine'): TimelineSpan => {
    const found = machine
      .spans({ boot: of, name })
      .findLast((s) => (s.version === 'machine') === (source === 'machine'));
    if (!found) throw new Error(`the timeline has no ${source} span "${name}" of boot ${of}`);
    return found;
  };
  const reboot = span(boot - 1, 'reboot', 'kernel');
  const kernelBoot = span(boot, 'boot', 'kernel');
  const running = machine.timeline.find(
    (e) => e.kind === 'trace' && e.name === 'kernel-running' && e.boot === boot,
  );
  if (!running) throw new Error(`boot ${boot} never reported running`);
  return {
    from: reboot.version,
    to: kernelBoot.version,
    rebootStart: reboot.start,
    running: running.time,
    phases: {
      'reboot-notifiers': span(boot - 1, 'reboot-notifiers', 'kernel').duration,
      'kho-finalize': span(boot - 1, 'kho-finalize', 'kernel').duration,
      'kexec-handoff': span(boot - 1, 'kexec-handoff', 'machine').duration,
      boot: kernelBoot.duration,
      'memory-init': span(boot, 'memory-init', 'kernel').duration,
      'modules-init': span(boot, 'modules-init', 'kernel').duration,
    },
  };
}
