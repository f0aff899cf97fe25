import { Worker } from 'node:worker_threads';
import type {
  KernelToMachine,
  KernelWorkerData,
  KernelWorkerPost,
  MachineToKernel,
  WireError,
} from './boot-protocol.js';
import type { DmaCounters } from './devices/dma-counters.js';
import { MachineHardware, type DeviceSpec } from './devices/machine-hardware.js';
import { KernelError, syscallError } from './kernel-error.js';
import { validateKernelImage, type KernelImage } from './kernel-image.js';
import { MachineHaltedError } from './machine-halted-error.js';
import { PhysicalMemory } from './physical-memory.js';
import { Process, type SyscallChannel } from './process.js';
import { spansOf, type SpanFilter, type TimelineEvent, type TimelineSpan } from './timeline.js';

/** Options of {@link Machine.create}. */
export interface MachineOptions {
  /** Size of RAM in bytes, rounded up to 4 KiB frames. Default 2 GiB (allocated lazily). */
  readonly ramBytes?: number;
  /**
   * Whether `kexec_load` starts the next kernel's worker right away (the default, as the design
   * wants), or only at reboot. Turning it off exists to measure what preloading saves.
   */
  readonly preloadKexecImage?: boolean;
  /**
   * Firmware hook between kernels: runs after kernel N wrote its handover and halted (its worker
   * runs nothing more), before kernel N+1 boots. It sees only what the hardware holds — RAM and the handover address —
   * which is what tests use to corrupt a handover on purpose and the demo to show it.
   */
  readonly onHandover?: (handover: HandoverEvent) => void | Promise<void>;
  /**
   * PCI devices on the machine's bus, each with its DMA engine in its own worker from `create` to
   * `shutdown`, across every kexec. Their DMA goes through the machine's IOMMU.
   */
  readonly devices?: readonly DeviceSpec[];
}

/** What {@link MachineOptions.onHandover} receives. */
export interface HandoverEvent {
  readonly memory: PhysicalMemory;
  /** Physical address of the KHO root FDT, or `null` when the old kernel had KHO off. */
  readonly khoFdtPhys: number | null;
  /** The boot number the next kernel will have. */
  readonly nextBoot: number;
}

/** What the machine is doing. */
export type MachineState = 'off' | 'booting' | 'running' | 'halted';

const DEFAULT_RAM_BYTES = 2 * 1024 ** 3;

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function isBatch(post: KernelWorkerPost): post is readonly KernelToMachine[] {
  return Array.isArray(post);
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A rejection nobody awaits yet (a preloaded kernel that failed) must not crash the host.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

/** One kernel worker, from load to termination. */
interface KernelSlot {
  readonly worker: Worker;
  readonly image: KernelImage;
  boot: number;
  /** Resolves with the image's note blob once its modules are imported. */
  readonly loaded: Deferred<Uint8Array>;
  readonly running: Deferred<void>;
  terminated: boolean;
}

interface PendingSyscall {
  readonly pid: number;
  readonly name: string;
  readonly result: Deferred<unknown>;
}

/**
 * The simulated machine: RAM, and the kernel workers that run on it one after another. It outlives
 * every kernel: at a kexec kernel N halts and kernel N+1 boots in a new worker, on the same
 * RAM. It routes the syscalls of processes to whichever kernel runs, and collects the kernels' logs
 * and trace events into one timeline.
 *
 * @example
 * ```ts
 * const machine = Machine.create({ ramBytes: 64 * 1024 ** 2 });
 * await machine.boot(createKernelImage({ cmdline: 'kho=on' }));
 * const proc = machine.spawn();
 * const fd = await proc.open('/dev/null');
 * ```
 */
export class Machine implements SyscallChannel {
  /** The machine's RAM, shared with every kernel. */
  readonly memory: PhysicalMemory;
  /** The IOMMU, the PCI functions and their counters. */
  readonly hardware: MachineHardware;
  readonly #preload: boolean;
  readonly #onHandover: MachineOptions['onHandover'];
  readonly #createdAt = performance.timeOrigin + performance.now();
  readonly #timeline: TimelineEvent[] = [];
  readonly #pending = new Map<number, PendingSyscall>();
  readonly #alive = new Set<number>();
  /** The halted worker of the last kernel that kexec'd, not torn down yet (see {@link #retire}). */
  #retired: KernelSlot | undefined;
  /** Teardowns of retired workers in progress. */
  readonly #retiring = new Set<Promise<void>>();
  #state: MachineState = 'off';
  #panicReason: string | undefined;
  #current: KernelSlot | undefined;
  #loadedImage: { image: KernelImage; slot: KernelSlot | undefined } | undefined;
  #bootCount = 0;
  #nextPid = 1;
  #nextSyscallId = 1;

  private constructor(memory: PhysicalMemory, options: MachineOptions) {
    this.memory = memory;
    this.hardware = new MachineHardware(memory, options.devices ?? []);
    this.hardware.start();
    this.#preload = options.preloadKexecImage ?? true;
    this.#onHandover = options.onHandover;
  }

  /** Create a machine with its RAM. Nothing runs until {@link boot}. */
  static create(options: MachineOptions = {}): Machine {
    return new Machine(PhysicalMemory.allocate(options.ramBytes ?? DEFAULT_RAM_BYTES), options);
  }

  get state(): MachineState {
    return this.#state;
  }

  /** Why the machine halted, when {@link state} is `'halted'`. */
  get panicReason(): string | undefined {
    return this.#panicReason;
  }

  /** Number of kernels booted so far; the running kernel is boot `bootCount - 1`. */
  get bootCount(): number {
    return this.#bootCount;
  }

  /** The version string of the running (or last) kernel. */
  get kernelVersion(): string | undefined {
    return this.#current?.image.version;
  }

  /** Every log line and trace event of every kernel, in the order they happened. */
  get timeline(): readonly TimelineEvent[] {
    return this.#timeline;
  }

  /** The timeline's trace spans, optionally only those of one boot or one name. */
  spans(filter: SpanFilter = {}): TimelineSpan[] {
    return spansOf(this.#timeline, filter);
  }

  /** DMA counters of the device at `bdf` (`"00:03.0"`), or summed over every device. */
  counters(bdf?: string): DmaCounters {
    return this.hardware.counters(bdf);
  }

  /** Milliseconds since the machine was created. */
  now(): number {
    return performance.timeOrigin + performance.now() - this.#createdAt;
  }

  /**
   * Cold-boot `image`. Resolves once the kernel runs; rejects with {@link MachineHaltedError} if it
   * panics while booting.
   */
  async boot(image: KernelImage): Promise<void> {
    if (this.#state === 'booting' || this.#state === 'running') {
      throw new Error(`Machine.boot: the machine is ${this.#state}; shut it down first`);
    }
    const checked = validateKernelImage(image);
    this.#panicReason = undefined;
    this.hardware.start();
    const slot = this.#startWorker(checked);
    this.#state = 'booting';
    try {
      await slot.loaded.promise;
    } catch (error) {
      throw this.#halt(`kernel image failed to load: ${(error as Error).message}`);
    }
    await this.#bootSlot(slot, null);
  }

  /** Start a process on the running kernel. */
  spawn(): Process {
    if (this.#state !== 'running' || !this.#current) {
      throw new Error(`Machine.spawn: no kernel is running (the machine is ${this.#state})`);
    }
    const pid = this.#nextPid++;
    this.#alive.add(pid);
    this.#post(this.#current, { type: 'spawn', pid });
    return new Process(pid, this, this.memory.buffer);
  }

  /** The kernel log of boot `boot` (default: the running kernel), formatted like `dmesg`. */
  dmesg(boot = this.#bootCount - 1): string {
    return this.#timeline
      .filter((e) => e.kind === 'log' && e.boot === boot)
      .map((e) => (e.kind === 'log' ? `[${e.uptime.toFixed(6).padStart(12)}] ${e.text}` : ''))
      .join('\n');
  }

  /**
   * Stop every kernel worker and power the devices off (reset, workers ended); the machine is
   * `'off'` afterwards and can boot again.
   */
  async shutdown(): Promise<void> {
    const slots = [this.#current, this.#loadedImage?.slot];
    this.#current = undefined;
    this.#loadedImage = undefined;
    this.#endProcesses(() => new KernelError('ESRCH', 'the machine was shut down'));
    this.#state = 'off';
    this.#endRetired();
    await Promise.all(slots.map((slot) => (slot ? this.#terminate(slot) : undefined)));
    await Promise.all(this.#retiring);
    await this.hardware.stop();
  }

  /** @internal {@link SyscallChannel} for processes. */
  isAlive(pid: number): boolean {
    return this.#alive.has(pid);
  }

  /** @internal {@link SyscallChannel} for processes. */
  syscall(pid: number, name: string, args: readonly unknown[]): Promise<unknown> {
    if (this.#state === 'halted') {
      return Promise.reject(new MachineHaltedError(this.#panicReason ?? 'unknown'));
    }
    if (!this.#alive.has(pid) || !this.#current) {
      return Promise.reject(
        new KernelError('ESRCH', `process ${pid} has ended`, { syscall: name }),
      );
    }
    const id = this.#nextSyscallId++;
    const result = deferred<unknown>();
    this.#pending.set(id, { pid, name, result });
    try {
      this.#post(this.#current, { type: 'syscall', id, pid, name, args });
    } catch (error) {
      // Arguments that cannot be cloned never reach the kernel: a bad pointer.
      this.#pending.delete(id);
      return Promise.reject(
        new KernelError('EFAULT', `${name}: argument cannot be passed to the kernel`, {
          cause: error,
          syscall: name,
        }),
      );
    }
    return result.promise;
  }

  #startWorker(image: KernelImage): KernelSlot {
    const workerData: KernelWorkerData = {
      ram: this.memory.buffer,
      image,
      mmio: this.hardware.mmio,
    };
    const worker = new Worker(new URL(image.entry), { workerData });
    const slot: KernelSlot = {
      worker,
      image,
      boot: this.#bootCount,
      loaded: deferred(),
      running: deferred(),
      terminated: false,
    };
    worker.on('message', (post: KernelWorkerPost) => {
      if (!isBatch(post)) {
        this.#onMessage(slot, post);
        return;
      }
      for (const message of post) this.#onMessage(slot, message);
    });
    worker.on('error', (error: Error) => this.#onWorkerFailure(slot, `Oops: ${error.message}`));
    worker.on('exit', (code: number) => {
      if (!slot.terminated) this.#onWorkerFailure(slot, `kernel worker exited with code ${code}`);
    });
    return slot;
  }

  #onWorkerFailure(slot: KernelSlot, reason: string): void {
    if (slot === this.#current) {
      this.#halt(reason);
    } else {
      slot.loaded.reject(new Error(reason));
      slot.terminated = true;
    }
  }

  async #bootSlot(slot: KernelSlot, khoFdtPhys: number | null): Promise<void> {
    this.#current = slot;
    slot.boot = this.#bootCount++;
    this.#state = 'booting';
    this.#post(slot, { type: 'boot', khoFdtPhys });
    await slot.running.promise;
  }

  #onMessage(slot: KernelSlot, message: KernelToMachine): void {
    const isCurrent = slot === this.#current;
    switch (message.type) {
      case 'loaded':
        slot.loaded.resolve(message.notes);
        return;
      case 'load-failed':
        slot.terminated = true;
        void slot.worker.terminate();
        slot.loaded.reject(new Error(message.reason));
        return;
      case 'log':
        this.#timeline.push({
          kind: 'log',
          time: message.time - this.#createdAt,
          boot: slot.boot,
          version: slot.image.version,
          uptime: message.uptime,
          level: message.level,
          text: message.text,
        });
        return;
      case 'trace':
        this.#timeline.push({
          kind: 'trace',
          time: message.time - this.#createdAt,
          boot: slot.boot,
          version: slot.image.version,
          name: message.name,
          phase: message.phase,
          ...(message.args ? { args: message.args } : {}),
        });
        return;
      default:
        break;
    }
    if (!isCurrent) return;
    switch (message.type) {
      case 'running':
        this.#state = 'running';
        this.#timeline.push({
          kind: 'trace',
          time: this.now(),
          boot: slot.boot,
          version: 'machine',
          name: 'kernel-running',
          phase: 'i',
          args: { version: slot.image.version },
        });
        slot.running.resolve();
        return;
      case 'syscall-result':
        this.#settleSyscall(message.id, message.value, message.error);
        return;
      case 'kexec-load':
        void this.#kexecLoad(slot, message.id, message.image);
        return;
      case 'kexec':
        void this.#kexec(slot, message.khoFdtPhys, message.rebootId);
        return;
      case 'panic':
        this.#halt(message.reason);
        return;
    }
  }

  #settleSyscall(id: number, value: unknown, error: WireError | undefined): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    if (!error) {
      if (pending.name === 'exit') this.#alive.delete(pending.pid);
      pending.result.resolve(value);
      return;
    }
    pending.result.reject(syscallError(error, pending.name));
  }

  async #kexecLoad(slot: KernelSlot, id: number, image: KernelImage): Promise<void> {
    const reply = (result: { error?: WireError; notes?: Uint8Array }): void => {
      if (slot === this.#current) this.#post(slot, { type: 'kexec-load-result', id, ...result });
    };
    this.#endRetired();
    const previous = this.#loadedImage?.slot;
    this.#loadedImage = undefined;
    if (previous) await this.#terminate(previous);
    const next = this.#startWorker(image);
    this.#loadedImage = { image, slot: next };
    try {
      const notes = await next.loaded.promise;
      if (!this.#preload && this.#loadedImage?.slot === next) {
        // Read the image's notes, then drop the worker: it starts again at reboot.
        this.#loadedImage = { image, slot: undefined };
        await this.#terminate(next);
      }
      reply({ notes });
    } catch (error) {
      if (this.#loadedImage?.slot === next) this.#loadedImage = undefined;
      reply({ error: { code: 'ENOEXEC', message: `ENOEXEC: ${(error as Error).message}` } });
    }
  }

  async #kexec(slot: KernelSlot, khoFdtPhys: number | null, rebootId: number): Promise<void> {
    const reboot = this.#pending.get(rebootId);
    this.#pending.delete(rebootId);
    // Another reboot still unanswered entered the kernel while this one was in progress, or would
    // have: the kernel's answer to it is EBUSY, which the old kernel can no longer send.
    for (const [id, pending] of this.#pending) {
      if (pending.name !== 'reboot') continue;
      this.#pending.delete(id);
      pending.result.reject(
        new KernelError('EBUSY', 'kexec: a reboot is already in progress', { syscall: 'reboot' }),
      );
    }
    this.#endProcesses(() => new KernelError('ESRCH', 'the process ended at kexec'));
    this.#state = 'booting';
    const loaded = this.#loadedImage;
    this.#loadedImage = undefined;
    this.#trace('kexec-handoff', 'B', { preloaded: loaded?.slot !== undefined });
    try {
      this.#retire(slot);
      if (!loaded) throw new Error('kexec without a loaded image');
      await this.#onHandover?.({ memory: this.memory, khoFdtPhys, nextBoot: this.#bootCount });
      const next = loaded.slot ?? this.#startWorker(loaded.image);
      try {
        await next.loaded.promise;
      } catch (error) {
        throw new Error(`kernel image failed to load: ${(error as Error).message}`);
      }
      this.#trace('kexec-handoff', 'E');
      await this.#bootSlot(next, khoFdtPhys);
      reboot?.result.resolve(0);
    } catch (error) {
      const halted = MachineHaltedError.isInstance(error)
        ? error
        : this.#halt((error as Error).message);
      reboot?.result.reject(halted);
    }
  }

  /** A trace event of the machine itself (version `"machine"`). */
  #trace(name: string, phase: 'B' | 'E', args?: Record<string, string | number | boolean>): void {
    this.#timeline.push({
      kind: 'trace',
      time: this.now(),
      boot: this.#bootCount - 1,
      version: 'machine',
      name,
      phase,
      ...(args ? { args } : {}),
    });
  }

  #halt(reason: string): MachineHaltedError {
    const error = new MachineHaltedError(reason);
    if (this.#state === 'halted') return error;
    this.#state = 'halted';
    this.#panicReason = reason;
    const slots = [this.#current, this.#loadedImage?.slot];
    this.#loadedImage = undefined;
    this.#endRetired();
    this.#endProcesses(() => error);
    for (const slot of slots) {
      if (!slot) continue;
      slot.running.reject(error);
      slot.loaded.reject(error);
      void this.#terminate(slot);
    }
    return error;
  }

  #endProcesses(reason: () => Error): void {
    this.#alive.clear();
    for (const [id, pending] of this.#pending) {
      this.#pending.delete(id);
      pending.result.reject(reason());
    }
  }

  /**
   * Set aside the worker of a kernel that kexec'd. Its last message was `kexec`, after which it
   * halted (it blocks and runs nothing more, like a CPU that jumped into the next kernel), so the
   * next kernel boots at once. Tearing a worker down takes milliseconds that grow with its heap
   * and competes for the host's cores, so it is not done inside the blackout: the worker is ended
   * at the next `kexec_load`, at {@link shutdown}, or if the machine halts.
   */
  #retire(slot: KernelSlot): void {
    this.#endRetired();
    this.#retired = slot;
  }

  /** Tear down the halted worker {@link #retire} set aside, if any, in the background. */
  #endRetired(): void {
    const slot = this.#retired;
    if (!slot) return;
    this.#retired = undefined;
    const ended = this.#terminate(slot)
      .catch(() => undefined)
      .finally(() => this.#retiring.delete(ended));
    this.#retiring.add(ended);
  }

  async #terminate(slot: KernelSlot): Promise<void> {
    if (slot.terminated) return;
    slot.terminated = true;
    await slot.worker.terminate();
  }

  #post(slot: KernelSlot, message: MachineToKernel): void {
    slot.worker.postMessage(message);
  }
}
