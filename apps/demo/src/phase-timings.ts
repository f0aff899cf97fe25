import type { Machine, TimelineSpan } from '@liveupdate/machine';

/** Milliseconds each phase of one boot took; `null` where a phase did not happen (a cold boot). */
export interface PhaseTimings {
  readonly boot: number;
  readonly version: string;
  readonly rebootNotifiers: number | null;
  readonly khoFinalize: number | null;
  readonly kexecHandoff: number | null;
  readonly kernelBoot: number | null;
  readonly memoryInit: number | null;
  readonly modulesInit: number | null;
  /** Old kernel's `reboot` span begins → the machine sees the new kernel running. */
  readonly blackout: number | null;
}

/**
 * The phases of boot `boot` from the machine's timeline. For a boot that came from a kexec, the
 * reboot phases are those of the kernel before it (boot - 1), and the machine's `kexec-handoff`
 * span (which carries the old kernel's boot number) sits between them.
 */
export function phaseTimings(machine: Machine, boot: number): PhaseTimings {
  const span = (
    of: number,
    name: string,
    source: 'kernel' | 'machine',
  ): TimelineSpan | undefined =>
    of < 0
      ? undefined
      : machine
          .spans({ boot: of, name })
          .find((s) => (s.version === 'machine') === (source === 'machine'));
  const duration = (s: TimelineSpan | undefined): number | null => (s ? s.duration : null);
  const kernelBoot = span(boot, 'boot', 'kernel');
  const reboot = span(boot - 1, 'reboot', 'kernel');
  const running = machine.timeline.find(
    (e) => e.kind === 'trace' && e.name === 'kernel-running' && e.boot === boot,
  );
  return {
    boot,
    version: kernelBoot?.version ?? '?',
    rebootNotifiers: duration(span(boot - 1, 'reboot-notifiers', 'kernel')),
    khoFinalize: duration(span(boot - 1, 'kho-finalize', 'kernel')),
    kexecHandoff: duration(span(boot - 1, 'kexec-handoff', 'machine')),
    kernelBoot: duration(kernelBoot),
    memoryInit: duration(span(boot, 'memory-init', 'kernel')),
    modulesInit: duration(span(boot, 'modules-init', 'kernel')),
    blackout: reboot && running ? running.time - reboot.start : null,
  };
}
