import {
  AF_UNIX,
  F_GETFD,
  KernelError,
  LINUX_REBOOT_CMD_KEXEC,
  MachineHardware,
  PciFunction,
  PhysicalMemory,
  Process,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  formatBdf,
  syscallError,
  type DeviceSpec,
  type KernelImage,
  type KernelToMachine,
  type MachineMmio,
  type SyscallChannel,
  type WireError,
} from '@liveupdate/machine';
import { Kernel } from './kernel.js';
import type { KexecTarget } from './kexec-target.js';
import type { ModuleLoader } from './module-loader.js';

/**
 * RAM of the rehearsal's private machine, allocated lazily: the host commits only what the two
 * kernels touch (their memory maps, what the modules allocate), not the whole. As large as a
 * real machine's, so that boot's work over free memory runs over as much.
 */
export const REHEARSAL_RAM_BYTES = 1024 * 1024 * 1024;
/**
 * A rehearsal that has not ended by then is given up (and reported): a module whose rehearsal
 * waits for something that never comes must not keep the kernel from booting. Tens of
 * milliseconds is usual; this bound is for a stuck one, not a slow machine.
 */
export const REHEARSAL_TIMEOUT_MS = 10_000;

/** What {@link rehearseLiveUpdate} did. */
export interface RehearsalResult {
  /** Milliseconds from the first private boot to the end of the last module's `after`. */
  readonly ms: number;
  /** The modules whose `rehearse` ran, in order. */
  readonly modules: readonly string[];
  /** Why the rehearsal stopped, when it did: the module and step, and the error. */
  readonly error?: string;
}

/**
 * Rehearse a live update of `image` before it boots: on a private machine of its own (private
 * RAM; `devices`, whose registers are private and whose DMA engines never run), boot the image's
 * kernel (without `page_poison`), let every module with a `rehearse` preserve what it
 * would (`before`), `kexec_load` the image and reboot into a second private kernel, which
 * restores the handover, and let the modules retrieve it (`after`); then run the kernel's own
 * part, unix sockets passing fds (see {@link rehearseUnixSockets}).
 *
 * Why: every kernel boots in a fresh worker, where V8 runs each function the first time without
 * the type feedback that makes it fast. A real kernel image is compiled machine code; without a
 * rehearsal ours would run its reboot path, its boot and LUO's restore for the first time inside
 * the blackout. The rehearsal runs them once, when the image is loaded — before the blackout.
 *
 * It shares nothing with the machine: its kernels get their own RAM and MMIO, and
 * their output (log, trace, results) stays here. A failure is returned, not thrown; so is a
 * rehearsal that has not ended after `timeoutMs` (default {@link REHEARSAL_TIMEOUT_MS}).
 */
export async function rehearseLiveUpdate(
  image: KernelImage,
  modules: ModuleLoader,
  self: KexecTarget,
  notes: Uint8Array,
  {
    timeoutMs = REHEARSAL_TIMEOUT_MS,
    devices = [],
  }: { timeoutMs?: number; devices?: readonly DeviceSpec[] } = {},
): Promise<RehearsalResult> {
  const start = performance.now();
  const names = modules.rehearsals().map((r) => r.name);
  const progress = { step: 'the first boot' };
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([rehearse(image, modules, self, notes, devices, progress), timedOut]);
    return { ms: performance.now() - start, modules: names };
  } catch (error) {
    return {
      ms: performance.now() - start,
      modules: names,
      error: `${progress.step}: ${(error as Error).message}`,
    };
  } finally {
    clearTimeout(timer);
  }
}

/** The steps of {@link rehearseLiveUpdate}; `progress.step` names the one under way. */
async function rehearse(
  image: KernelImage,
  modules: ModuleLoader,
  self: KexecTarget,
  notes: Uint8Array,
  devices: readonly DeviceSpec[],
  progress: { step: string },
): Promise<void> {
  const memory = PhysicalMemory.allocate(REHEARSAL_RAM_BYTES);
  // Never started: the devices' registers are there, their DMA engines do not run.
  const mmio = new MachineHardware(memory, devices).mmio;
  // Without page_poison: it would write every free frame of the private RAM, twice.
  const cmdline = image.cmdline
    .split(' ')
    .filter((param) => !param.startsWith('page_poison='))
    .join(' ');
  const boot = (khoFdtPhys: number | null) =>
    PrivateKernel.boot(memory, mmio, image, cmdline, modules.copy(), self, notes, khoFdtPhys);
  const first = await boot(null);
  const before = first.spawn(1);
  for (const { name, rehearse } of modules.rehearsals()) {
    progress.step = `${name}: before`;
    await rehearse.before(before);
  }
  progress.step = 'the kexec';
  await before.kexecLoad(image);
  await before.reboot(LINUX_REBOOT_CMD_KEXEC);
  progress.step = 'the second boot';
  const after = (await boot(first.khoFdtPhys())).spawn(2);
  for (const { name, rehearse } of modules.rehearsals()) {
    progress.step = `${name}: after`;
    await rehearse.after(after);
  }
  progress.step = 'the kernel: unix sockets';
  await rehearseUnixSockets(after);
}

/** Round trips of {@link rehearseUnixSockets}. */
const SOCKET_ROUNDS = 100;
const SOCKET_PATH = '/rehearsal.sock';
const HELLO = new TextEncoder().encode('hello');

/**
 * The kernel's own part, after the modules': what the services and the agent of a live update do
 * right after the kexec, over and over — a unix socket connected, an fd sent with `SCM_RIGHTS`,
 * received, looked at and closed — so that the socket and fd paths are optimized too.
 */
async function rehearseUnixSockets(process: Process): Promise<void> {
  const listener = await process.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC);
  await process.bind(listener, SOCKET_PATH);
  await process.listen(listener, 1);
  const client = await process.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC);
  const accepted = process.accept(listener, SOCK_CLOEXEC);
  await process.connect(client, SOCKET_PATH);
  const server = await accepted;
  const file = await process.open('/dev/null');
  for (let n = 0; n < SOCKET_ROUNDS; n++) {
    await process.sendmsg(client, HELLO, { rights: [file] });
    const { data, rights } = await process.recvmsg(server, 64);
    if (data.length !== HELLO.length || rights.length !== 1) {
      throw new Error(`received ${data.length} bytes and ${rights.length} fds`);
    }
    await process.fcntl(rights[0]!, F_GETFD);
    await process.close(rights[0]!);
  }
  for (const fd of [file, server, client, listener]) await process.close(fd);
  await process.unlink(SOCKET_PATH);
}

interface Pending {
  readonly name: string;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/**
 * A kernel of the rehearsal, and the channel its processes' syscalls take: what the machine and
 * the worker do for a real kernel, in the same thread. Arguments and results are copied the way
 * `postMessage` copies them, so the kernel sees what it would see from a real process.
 */
class PrivateKernel implements SyscallChannel {
  readonly #pending = new Map<number, Pending>();
  readonly #memory: PhysicalMemory;
  readonly #notes: Uint8Array;
  #kernel: Kernel | undefined;
  #nextId = 1;
  #khoFdtPhys: number | null | undefined;
  #panic: string | undefined;

  private constructor(memory: PhysicalMemory, notes: Uint8Array) {
    this.#memory = memory;
    this.#notes = notes;
  }

  static async boot(
    memory: PhysicalMemory,
    mmio: MachineMmio,
    image: KernelImage,
    cmdline: string,
    modules: ModuleLoader,
    self: KexecTarget,
    notes: Uint8Array,
    khoFdtPhys: number | null,
  ): Promise<PrivateKernel> {
    const channel = new PrivateKernel(memory, notes);
    channel.#kernel = await Kernel.boot(
      memory.buffer,
      mmio,
      { version: image.version, cmdline, khoFdtPhys },
      modules,
      (message) => channel.#output(message),
      self,
    );
    return channel;
  }

  spawn(pid: number): Process {
    this.#kernel!.spawn(pid);
    return new Process(pid, this, this.#memory.buffer);
  }

  /** The handover address the kernel's kexec handed on; throws if it did not kexec. */
  khoFdtPhys(): number | null {
    if (this.#khoFdtPhys === undefined) throw new Error('the first kernel did not kexec');
    return this.#khoFdtPhys;
  }

  isAlive(): boolean {
    return this.#panic === undefined && this.#khoFdtPhys === undefined;
  }

  syscall(pid: number, name: string, args: readonly unknown[]): Promise<unknown> {
    if (!this.isAlive()) {
      return Promise.reject(new KernelError('ESRCH', `${name}: the rehearsal's kernel is gone`));
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { name, resolve, reject });
      void this.#kernel!.syscall(id, pid, name, structuredClone(args));
    });
  }

  #output(message: KernelToMachine): void {
    switch (message.type) {
      case 'syscall-result':
        this.#settle(message.id, message.value, message.error);
        return;
      case 'kexec-load':
        // The image loads itself: its own notes.
        this.#kernel!.kexecLoadResult(message.id, undefined, this.#notes);
        return;
      case 'kexec':
        this.#khoFdtPhys = message.khoFdtPhys;
        this.#settle(message.rebootId, 0, undefined);
        return;
      case 'panic':
        this.#panic = message.reason;
        for (const [id, pending] of this.#pending) {
          this.#pending.delete(id);
          pending.reject(new Error(`kernel panic: ${message.reason}`));
        }
        return;
      default:
        // Log lines and trace events of the rehearsal are not the machine's.
        return;
    }
  }

  #settle(id: number, value: unknown, error: WireError | undefined): void {
    const pending = this.#pending.get(id);
    if (!pending) return;
    this.#pending.delete(id);
    if (!error) {
      pending.resolve(structuredClone(value));
      return;
    }
    pending.reject(syscallError(error, pending.name));
  }
}

/** Devices of the kinds and at the addresses of `mmio`'s, for a rehearsal's private machine. */
export function devicesLike(mmio: MachineMmio): DeviceSpec[] {
  return mmio.functions.map((fn) => ({ kind: fn.kind, bdf: formatBdf(new PciFunction(fn).bdf) }));
}
