import { writeFile } from 'node:fs/promises';
import {
  LINUX_REBOOT_CMD_KEXEC,
  Machine,
  toChromeTrace,
  type ChromeTraceOptions,
  type KernelImage,
  type MachineOptions,
  type Process,
} from '@liveupdate/machine';
import { liveUpdateImage } from './live-update-image.js';

/** RAM of a harness machine unless told otherwise: small, so poisoning at each boot stays cheap. */
export const DEFAULT_HARNESS_RAM_BYTES = 64 * 1024 * 1024;

/** Version of the first kernel unless told otherwise; each live update counts the last number up. */
export const DEFAULT_HARNESS_VERSION = '6.18.0';

/** Options of {@link bootForLiveUpdate}. */
export interface BootForLiveUpdateOptions {
  /** Modules loaded after LUO in every kernel, e.g. the one registering the handler under test. */
  readonly modules: readonly string[];
  /** Where relative and bare module specifiers resolve from; usually `import.meta.url`. */
  readonly moduleBase?: string;
  /** Default {@link DEFAULT_HARNESS_RAM_BYTES}. */
  readonly ramBytes?: number;
  /** Version of the first kernel. Default {@link DEFAULT_HARNESS_VERSION}. */
  readonly version?: string;
  /** Extra command-line words for every kernel (see `liveUpdateImage`). */
  readonly cmdline?: string;
  /**
   * Runs between kernels with the RAM and the KHO root FDT's address (see `Machine.create`): the
   * place to corrupt a handover on purpose.
   */
  readonly onHandover?: MachineOptions['onHandover'];
  /** PCI devices of the machine (see `Machine.create`), for handlers of device files. */
  readonly devices?: MachineOptions['devices'];
  /** Every kernel's image rehearses a live update when loaded (see `liveUpdateImage`). */
  readonly rehearse?: boolean;
}

/**
 * A machine running a LUO kernel, and the process that drives it. Sessions must outlive the
 * kexec, and a session survives only while a process holds its fd: {@link process} is that
 * process. Create sessions from it (or from other processes that stay alive) and call
 * {@link liveUpdate}, which reboots through it.
 */
export class LiveUpdateHarness {
  /** The simulated machine. Its `dmesg()`, `timeline` and `spans()` cover every kernel. */
  readonly machine: Machine;
  readonly #imageFor: (version: string) => KernelImage;
  #process: Process;

  /** @internal Use {@link bootForLiveUpdate}. */
  constructor(machine: Machine, imageFor: (version: string) => KernelImage) {
    this.machine = machine;
    this.#imageFor = imageFor;
    this.#process = machine.spawn();
  }

  /**
   * A process of the running kernel: spawned at boot, then a fresh one after each live update
   * (the old one ended at the kexec, like every process).
   */
  get process(): Process {
    return this.#process;
  }

  /**
   * Live-update the machine: `kexec_load` the next kernel (the same modules and command line, the
   * version `next`, default the current one with its last number counted up, or the image `next`
   * itself), then `reboot(LINUX_REBOOT_CMD_KEXEC)` from {@link process}, so its session fds are
   * open when LUO serializes. Resolves with a new process of the new kernel, which is also
   * {@link process} from then on.
   *
   * @throws KernelError the reboot's error when a reboot notifier refused (a handler's `freeze`
   *   failed): the old kernel still runs, {@link process} stays alive with its sessions, and a
   *   later `liveUpdate()` may retry
   * @throws MachineHaltedError when the new kernel panicked while booting
   */
  async liveUpdate(next?: string | KernelImage): Promise<Process> {
    const image =
      typeof next === 'object' ? next : this.#imageFor(next ?? nextVersion(this.machine));
    await this.#process.kexecLoad(image);
    await this.#process.reboot(LINUX_REBOOT_CMD_KEXEC);
    this.#process = this.machine.spawn();
    return this.#process;
  }

  /**
   * Write every kernel's spans, log and memory counter so far as a Chrome trace (JSON object
   * format, see `toChromeTrace` of `@liveupdate/machine`) to `file`: open it in
   * https://ui.perfetto.dev or `chrome://tracing` to see where a live update spent its time.
   * `options` adds spans and counters measured by the test itself.
   */
  async writeTrace(file: string, options?: ChromeTraceOptions): Promise<void> {
    await writeFile(file, JSON.stringify(toChromeTrace(this.machine.timeline, options)));
  }

  /** Stop the machine's kernel workers. Call it when done, also when a test fails. */
  async shutdown(): Promise<void> {
    await this.machine.shutdown();
  }
}

/**
 * Boot a machine with LUO on (see `liveUpdateImage`) and the given handler modules, and return its
 * harness. Shut it down when done.
 *
 * @example
 * ```ts
 * const harness = await bootForLiveUpdate({ modules: [handlerModuleUrl] });
 * try {
 *   const device = await LiveUpdateDevice.open(harness.process);
 *   const session = await device.createSession('app');
 *   await session.preserveFd(fd, 1n);
 *   const next = await harness.liveUpdate();
 *   const incoming = await (await LiveUpdateDevice.open(next)).retrieveSession('app');
 * } finally {
 *   await harness.shutdown();
 * }
 * ```
 *
 * @throws MachineHaltedError when the first kernel panics while booting
 */
export async function bootForLiveUpdate(
  options: BootForLiveUpdateOptions,
): Promise<LiveUpdateHarness> {
  const machine = Machine.create({
    ramBytes: options.ramBytes ?? DEFAULT_HARNESS_RAM_BYTES,
    ...(options.onHandover ? { onHandover: options.onHandover } : {}),
    ...(options.devices ? { devices: options.devices } : {}),
  });
  const imageFor = (version: string): KernelImage =>
    liveUpdateImage({
      version,
      modules: options.modules,
      ...(options.cmdline === undefined ? {} : { cmdline: options.cmdline }),
      ...(options.moduleBase === undefined ? {} : { moduleBase: options.moduleBase }),
      ...(options.rehearse === undefined ? {} : { rehearse: options.rehearse }),
    });
  try {
    await machine.boot(imageFor(options.version ?? DEFAULT_HARNESS_VERSION));
  } catch (error) {
    await machine.shutdown();
    throw error;
  }
  return new LiveUpdateHarness(machine, imageFor);
}

/** `"6.18.0"` → `"6.18.1"`; a version not ending in a number gets `".1"` appended. */
function nextVersion(machine: Machine): string {
  const current = machine.kernelVersion ?? DEFAULT_HARNESS_VERSION;
  const match = /^(.*?)(\d+)$/.exec(current);
  return match ? `${match[1]}${Number(match[2]) + 1}` : `${current}.1`;
}
