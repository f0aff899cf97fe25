import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import {
  KernelError,
  LINUX_REBOOT_CMD_KEXEC,
  LINUX_REBOOT_CMD_HALT,
  LINUX_REBOOT_CMD_POWER_OFF,
  LINUX_REBOOT_CMD_RESTART,
  IommuRegisters,
  PAGE_SIZE,
  PciFunction,
  PhysicalMemory,
  validateKernelImage,
  type KernelImage,
  type KernelToMachine,
  type MachineMmio,
  type WireError,
} from '@liveupdate/machine';
import type { BootParams } from './boot-params.js';
import { CommandLine } from './command-line.js';
import { checkDeviceHandoverAgreement } from './drivers/device-handover-agreement.js';
import { IOMMU_SERVICE, IommuDriver } from './drivers/iommu-driver.js';
import { IommuHandoverError } from './drivers/iommu-handover.js';
import { PCI_BUS_SERVICE, PciBus } from './drivers/pci-bus.js';
import { PciHandoverError } from './drivers/pci-handover.js';
import { kernelFormatsCheck } from './kernel-formats.js';
import { KexecChecks, kexecTarget, type KexecTarget } from './kexec-target.js';
import { KexecHandover } from './kho/kexec-handover.js';
import { KhoHandoverError, readKhoHandover, type KhoIncoming } from './kho/kho-incoming.js';
import { KernelLog } from './kernel-log.js';
import type { ModuleContext, ModuleServices, ServiceKey } from './kernel-module.js';
import { KernelPanic } from './kernel-panic.js';
import { planMemoryLayout, FIRMWARE_BYTES } from './memory-layout.js';
import type { ModuleLoader } from './module-loader.js';
import { ModuleMemory } from './module-memory.js';
import { MAX_PAGE_ORDER, PageAllocator } from './page-allocator.js';
import { ProcessTable } from './process-table.js';
import { RebootNotifierChain } from './reboot-notifier-chain.js';
import { KEXEC_HISTORY_SERVICE, KexecHistoryService } from './history/kexec-history.js';
import { argPath, argUint } from './syscalls/syscall-args.js';
import { registerEventfdSyscalls } from './syscalls/eventfd-syscalls.js';
import { registerFileSyscalls, releaseProcessFiles } from './syscalls/file-syscalls.js';
import { registerSocketSyscalls } from './syscalls/socket-syscalls.js';
import { SyscallTable } from './syscalls/syscall-table.js';
import { BOOT_PARAMS, KHO_INCOMING, MEMORY_LAYOUT, PHYSICAL_MEMORY } from './tokens.js';
import { closeHostSockets } from './net/inet-socket.js';
import { nullDeviceOperations } from './vfs/null-device.js';
import type { SyscallContext } from './vfs/file.js';
import { Vfs } from './vfs/vfs.js';

type Output = (message: KernelToMachine) => void;

const REBOOT_COMMANDS = new Set([
  LINUX_REBOOT_CMD_KEXEC,
  LINUX_REBOOT_CMD_HALT,
  LINUX_REBOOT_CMD_POWER_OFF,
  LINUX_REBOOT_CMD_RESTART,
]);

/**
 * One boot of the kernel, inside its worker: the DI container of this boot and the syscall entry.
 * Created by {@link Kernel.boot}; lives until the worker is terminated at kexec.
 */
export class Kernel {
  readonly container: DependencyContainer;
  readonly log: KernelLog;
  readonly #output: Output;
  readonly #processes: ProcessTable;
  readonly #syscalls: SyscallTable;
  readonly #modules: ModuleLoader;
  #pendingKexecLoads = new Map<
    number,
    (result: { error?: WireError; notes?: Uint8Array }) => void
  >();
  #nextRequest = 1;
  #kexecImage: KernelImage | undefined;
  #kexecTarget: KexecTarget | undefined;
  readonly #kexecChecks: KexecChecks;
  #rebooting = false;
  #gone = false;
  /** The machine's id of each syscall running, for the reply only the machine can give. */
  readonly #syscallIds = new WeakMap<SyscallContext, number>();

  private constructor(
    container: DependencyContainer,
    output: Output,
    modules: ModuleLoader,
    self: KexecTarget,
  ) {
    this.container = container;
    this.log = container.resolve(KernelLog);
    this.#output = output;
    this.#modules = modules;
    this.#processes = container.resolve(ProcessTable);
    this.#syscalls = container.resolve(SyscallTable);
    this.#kexecChecks = new KexecChecks(this.log, self, () => this.#kexecTarget);
  }

  /**
   * Boot: parse the command line, read and validate the KHO handover (panicking on corruption),
   * lay out memory, bring up the page allocator (reserving preserved frames, poisoning free ones
   * under `page_poison=on`), KHO, PCI enumeration and the IOMMU, the VFS and syscalls, then
   * initialize the modules. `self` is this kernel as its image's notes describe it, read when the
   * image was loaded (the worker does it before `boot`, outside the blackout).
   */
  static async boot(
    ram: SharedArrayBuffer,
    mmio: MachineMmio,
    params: BootParams,
    modules: ModuleLoader,
    output: Output,
    self: KexecTarget,
  ): Promise<Kernel> {
    const log = new KernelLog(output, KernelLog.now());
    const panic = (reason: string): never => {
      log.emerg(`Kernel panic - not syncing: ${reason}`);
      output({ type: 'panic', reason });
      throw new KernelPanic(reason);
    };
    log.trace('boot', 'B', { version: params.version, khoBoot: params.khoFdtPhys !== null });
    log.info(`Linux version ${params.version} (liveupdate simulated kernel)`);
    log.info(`Command line: ${params.cmdline}`);
    const memory = new PhysicalMemory(ram);
    const cmdline = new CommandLine(params.cmdline, (message) => log.warn(message));
    const khoEnabled = cmdline.bool('kho', false);

    log.trace('memory-init', 'B');
    let incoming: KhoIncoming | null = null;
    if (params.khoFdtPhys !== null) {
      if (!khoEnabled) {
        log.warn('KHO: this kernel has KHO disabled; ignoring the handover');
      } else {
        try {
          const handover = readKhoHandover(
            memory,
            params.khoFdtPhys,
            MAX_PAGE_ORDER,
            FIRMWARE_BYTES / PAGE_SIZE,
          );
          if ('incompatible' in handover) {
            log.warn(
              `KHO: incompatible handover (compatible = "${handover.incompatible}"); ignoring it`,
            );
          } else {
            incoming = handover;
          }
        } catch (error) {
          if (error instanceof KhoHandoverError) panic(`KHO: ${error.message}`);
          throw error;
        }
      }
    }
    let layout;
    try {
      layout = planMemoryLayout(memory, cmdline, khoEnabled, incoming?.scratch ?? null);
    } catch (error) {
      return panic((error as Error).message);
    }

    // One container per boot. Nothing is ever registered in the global container: it is only the
    // parent tsyringe needs to create this one, and this worker imported it afresh.
    const container = rootContainer.createChildContainer();
    container.register(BOOT_PARAMS, { useValue: params });
    container.register(PHYSICAL_MEMORY, { useValue: memory });
    container.register(MEMORY_LAYOUT, { useValue: layout });
    // useValue: null would be taken for a missing provider.
    container.register(KHO_INCOMING, { useFactory: () => incoming });
    container.register(CommandLine, { useValue: cmdline });
    container.register(KernelLog, { useValue: log });
    container.registerSingleton(PageAllocator);
    container.registerSingleton(KexecHandover);
    container.registerSingleton(Vfs);
    container.registerSingleton(SyscallTable);
    container.registerSingleton(RebootNotifierChain);
    container.registerSingleton(ProcessTable);
    const pages = container.resolve(PageAllocator);
    const kho = container.resolve(KexecHandover);
    log.trace('memory-init', 'E', {
      freeFrames: pages.stats.free,
      preservedFolios: kho.stats.unrestoredFolios,
    });
    if (khoEnabled && layout.scratch) {
      log.info(
        `KHO: enabled, scratch ${layout.scratch.frames * 4}K at 0x${(layout.scratch.pfn * PAGE_SIZE).toString(16)}`,
      );
    }

    // Devices and the IOMMU adopt what the previous kernel preserved before anything else can
    // allocate; a malformed handover is fatal, as DMA may already have written through it.
    let pci: PciBus;
    let iommu: IommuDriver;
    try {
      pci = new PciBus(mmio, log, { kho, memory });
      iommu = new IommuDriver(
        memory,
        pages,
        new IommuRegisters(
          mmio.iommu,
          mmio.functions.map((buffers) => new PciFunction(buffers)),
        ),
        log,
        kho,
      );
      checkDeviceHandoverAgreement(pci, iommu);
    } catch (error) {
      if (error instanceof PciHandoverError) {
        return panic(`PCI: Failed to restore PCI Live Update FLB: ${error.message}`);
      }
      if (error instanceof IommuHandoverError) {
        return panic(`DMAR: Failed to restore IOMMU Live Update FLB: ${error.message}`);
      }
      throw error;
    }
    container.register(PciBus, { useValue: pci });
    container.register(IommuDriver, { useValue: iommu });

    const vfs = container.resolve(Vfs);
    vfs.registerCharDevice('/dev/null', nullDeviceOperations);
    const history = new KexecHistoryService(kho, memory, log, params.version);
    history.registerFiles(vfs);
    container.register(KexecHistoryService, { useValue: history });
    const kernel = new Kernel(container, output, modules, self);
    kernel.#kexecChecks.registerCheck(kernelFormatsCheck(kho));
    const syscalls = container.resolve(SyscallTable);
    registerFileSyscalls(syscalls, vfs, memory);
    registerEventfdSyscalls(syscalls, vfs);
    registerSocketSyscalls(syscalls, vfs);
    kernel.#registerSystemSyscalls();

    const provided = new Map<symbol, unknown>();
    const services: ModuleServices = {
      provide(key, value) {
        if (provided.has(key))
          throw new KernelError('EEXIST', `service ${String(key.description)} is already provided`);
        provided.set(key, value);
      },
      get: <T>(key: ServiceKey<T>) => provided.get(key) as T | undefined,
    };
    services.provide(PCI_BUS_SERVICE, pci);
    services.provide(IOMMU_SERVICE, iommu);
    services.provide(KEXEC_HISTORY_SERVICE, history);
    log.trace('modules-init', 'B');
    await modules.initAll(
      (module): ModuleContext => ({
        name: module.name,
        kernelVersion: params.version,
        cmdline,
        log,
        memory: new ModuleMemory(memory, pages, module.name),
        pages,
        kho,
        vfs,
        syscalls,
        rebootNotifiers: container.resolve(RebootNotifierChain),
        kexec: kernel.#kexecChecks,
        services,
        panic,
      }),
      log,
    );
    log.trace('modules-init', 'E', { modules: modules.loaded.join(',') });
    // Drivers and modules have taken their subtrees; what is left has a name nobody knows.
    kho.reportUnclaimedSubtrees();
    log.info('Run /sbin/init as init process');
    log.trace('boot', 'E');
    return kernel;
  }

  /** A new process from the machine. */
  spawn(pid: number): void {
    this.#processes.create(pid);
  }

  /** Run one syscall and post its result. A panic inside it posts nothing: the machine halts. */
  async syscall(id: number, pid: number, name: string, args: readonly unknown[]): Promise<void> {
    let reply: KernelToMachine;
    try {
      const process = this.#processes.get(pid);
      const ctx: SyscallContext = { process };
      this.#syscallIds.set(ctx, id);
      const dispatch = (): Promise<unknown> => this.#syscalls.dispatch(ctx, name, args);
      // exit waits for the process's other syscalls, so it cannot be one of them.
      const value = await (name === 'exit' ? dispatch() : process.syscall(name, dispatch));
      reply = { type: 'syscall-result', id, value };
    } catch (error) {
      if (KernelPanic.isInstance(error)) return;
      if (!KernelError.isInstance(error)) {
        this.log.err(`BUG: syscall ${name}: ${(error as Error).stack ?? String(error)}`);
      }
      reply = { type: 'syscall-result', id, error: toWireError(error) };
    }
    if (this.#gone) return;
    try {
      this.#output(reply);
    } catch (error) {
      this.#output({
        type: 'syscall-result',
        id,
        error: toWireError(
          new KernelError('EIO', `${name}: result cannot be returned: ${(error as Error).message}`),
        ),
      });
    }
  }

  /** The machine's answer to a `kexec-load` request. */
  kexecLoadResult(id: number, error: WireError | undefined, notes: Uint8Array | undefined): void {
    this.#pendingKexecLoads.get(id)?.({ ...(error ? { error } : {}), ...(notes ? { notes } : {}) });
    this.#pendingKexecLoads.delete(id);
  }

  #registerSystemSyscalls(): void {
    const vfs = this.container.resolve(Vfs);
    this.#syscalls.register('kexec_load', async (_ctx, image) => {
      const checked = validateKernelImage(image);
      // The kexec lock is held by a reboot in progress.
      if (this.#rebooting) throw new KernelError('EBUSY', 'kexec: a reboot is already in progress');
      const id = this.#nextRequest++;
      const { error, notes } = await new Promise<{ error?: WireError; notes?: Uint8Array }>(
        (resolve) => {
          this.#pendingKexecLoads.set(id, resolve);
          this.#output({ type: 'kexec-load', id, image: checked });
        },
      );
      // A failed load unloads what was loaded before, as kexec_load does.
      this.#kexecImage = undefined;
      this.#kexecTarget = undefined;
      if (error) throw new KernelError('ENOEXEC', error.message.replace(/^ENOEXEC: /, ''));
      // The image's notes are data from outside this kernel: read them like any input.
      const target = kexecTarget(checked.version, checked.cmdline, notes ?? new Uint8Array(0));
      this.#kexecImage = checked;
      this.#kexecTarget = target;
      this.log.info(
        `kexec: loaded ${checked.version} (${checked.modules.length} modules; reads ${[...target.reads.keys()].join(', ') || 'nothing'})`,
      );
      return 0;
    });
    this.#syscalls.register('reboot', (ctx, cmd) => this.#reboot(cmd, this.#syscallIds.get(ctx)!));
    this.#syscalls.register('delete_module', async (_ctx, name) => {
      await this.#modules.unload(argPath(name));
      this.log.info(`module ${String(name)} unloaded`);
      return 0;
    });
    this.#syscalls.register('exit', async (ctx) => {
      await ctx.process.beginExit();
      await releaseProcessFiles(ctx.process, vfs);
      this.#processes.remove(ctx.process.pid);
      return 0;
    });
  }

  /** `reboot(2)`; `id` is the syscall's, which the machine answers once the new kernel runs. */
  async #reboot(cmd: unknown, id: number): Promise<never> {
    const command = argUint(cmd, 'cmd');
    if (!REBOOT_COMMANDS.has(command))
      throw new KernelError('EINVAL', `unknown reboot command 0x${command.toString(16)}`);
    if (command !== LINUX_REBOOT_CMD_KEXEC) {
      throw new KernelError('EINVAL', 'only LINUX_REBOOT_CMD_KEXEC is supported by this machine');
    }
    // kernel_kexec(): the kexec lock first, so a reboot during another one is EBUSY.
    if (this.#rebooting) throw new KernelError('EBUSY', 'kexec: a reboot is already in progress');
    if (!this.#kexecImage) throw new KernelError('EINVAL', 'kexec: no kernel image is loaded');
    this.#rebooting = true;
    const log = this.log;
    log.trace('reboot', 'B');
    try {
      // Before anything irreversible: can the loaded kernel read everything that would cross?
      log.trace('kexec-check', 'B');
      try {
        await this.#kexecChecks.assertReadable();
      } finally {
        log.trace('kexec-check', 'E');
      }
      log.info('reboot: running reboot notifiers');
      log.trace('reboot-notifiers', 'B');
      let abortNotifiers: () => Promise<void>;
      try {
        abortNotifiers = await this.container
          .resolve(RebootNotifierChain)
          .call((notifier, error) => {
            log.warn(
              `reboot: notifier ${notifier.name} failed to abort: ${(error as Error).message}`,
            );
          });
      } finally {
        log.trace('reboot-notifiers', 'E');
      }
      const history = this.container.resolve(KexecHistoryService);
      history.publish(this.#kexecTarget);
      let khoFdtPhys: number | null;
      log.trace('kho-finalize', 'B');
      try {
        khoFdtPhys = this.container.resolve(KexecHandover).finalize(this.#kexecTarget);
      } catch (error) {
        history.unpublish();
        await abortNotifiers();
        throw error;
      } finally {
        log.trace('kho-finalize', 'E');
      }
      // device_shutdown(): no device the next kernel did not agree to keep may do DMA into
      // memory it will reuse; then the IOMMU stops translating, or, with preserved devices,
      // keeps translating for them alone.
      log.trace('device-shutdown', 'B');
      this.container.resolve(PciBus).shutdown();
      this.container.resolve(IommuDriver).shutdown();
      // The TCP stack goes with this kernel: its ports are free for the next one.
      closeHostSockets();
      log.trace('device-shutdown', 'E');
      log.info(`kexec: starting new kernel ${this.#kexecImage.version}`);
      log.trace('reboot', 'E');
      this.#gone = true;
      this.#output({ type: 'kexec', khoFdtPhys, rebootId: id });
      // In a worker, output halts this CPU; elsewhere (a kernel in a test) the syscall never returns.
      return await new Promise<never>(() => undefined);
    } catch (error) {
      this.#rebooting = false;
      log.warn(`reboot: kexec aborted: ${(error as Error).message}`);
      log.trace('reboot', 'E', { aborted: true });
      throw error;
    }
  }
}

function toWireError(error: unknown): WireError {
  if (KernelError.isInstance(error)) return { code: error.code, message: error.message };
  return { code: 'EIO', message: `EIO: ${(error as Error)?.message ?? String(error)}` };
}
