import {
  KernelError,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PciFunction,
  formatBdf,
  parseBdf,
  type Bdf,
  type MachineMmio,
  type PhysicalMemory,
} from '@liveupdate/machine';
import type { KernelLog } from '../kernel-log.js';
import type { ServiceKey } from '../kernel-module.js';
import type { KexecHandover } from '../kho/kexec-handover.js';
import { PCI_LU_SUBTREE, PciHandoverError, decodePciSer, encodePciSer } from './pci-handover.js';

/** A driver for PCI devices (`struct pci_driver`), matched by vendor and device id. */
export interface PciDriver {
  readonly name: string;
  readonly ids: readonly { readonly vendor: number; readonly device: number }[];
  /** Called once per matching unbound device; a throw leaves the device unbound. */
  probe(device: PciDevice): void;
  /** Called when the driver is unregistered while bound. */
  remove?(device: PciDevice): void;
}

/**
 * An interrupt handler installed with {@link PciDevice.requestIrq}. `count` is the number of
 * interrupts the device delivered since the previous call (at least 1): interrupts that arrive
 * while the kernel is busy are coalesced into one call.
 */
export type IrqHandler = (count: number) => void;

/** The state of one installed handler; `active` goes false in `freeIrq`. */
interface IrqAction {
  readonly handler: IrqHandler;
  seen: number;
  active: boolean;
}

/**
 * One PCI function as the kernel sees it (`struct pci_dev`): config space, BAR0 registers, bus
 * mastering, reset, interrupts, and the driver bound to it.
 */
export class PciDevice {
  readonly bdf: Bdf;
  /** `0000:bb:dd.f` */
  readonly name: string;
  readonly vendor: number;
  readonly device: number;
  readonly classCode: number;
  #driver: PciDriver | undefined;
  #incoming = false;
  readonly #fn: PciFunction;
  readonly #log: KernelLog;
  #irq: IrqAction | undefined;

  /** @internal Made by {@link PciBus} at enumeration. */
  constructor(fn: PciFunction, log: KernelLog) {
    this.#fn = fn;
    this.#log = log;
    this.bdf = fn.bdf;
    this.name = formatBdf(fn.bdf);
    this.vendor = fn.vendor;
    this.device = fn.device;
    this.classCode = fn.classCode;
  }

  get driver(): PciDriver | undefined {
    return this.#driver;
  }

  /** @internal */
  set driver(driver: PciDriver | undefined) {
    this.#driver = driver;
  }

  /**
   * The previous kernel preserved this device for a live update and it may still be doing DMA:
   * enumeration did not reset it. Cleared by {@link PciBus.finishIncoming}.
   */
  get incoming(): boolean {
    return this.#incoming;
  }

  /** @internal */
  set incoming(incoming: boolean) {
    this.#incoming = incoming;
  }

  /** `pci_enable_device_mem`: turn on memory decode so BAR0 responds. */
  enableDevice(): void {
    this.#setCommand(PCI_COMMAND_MEMORY, true);
  }

  /** `pci_set_master` / `pci_clear_master`. */
  setMaster(enable: boolean): void {
    this.#setCommand(PCI_COMMAND_MASTER, enable);
  }

  get busMaster(): boolean {
    return this.#fn.busMaster;
  }

  /** Enable or disable the MSI-X-like interrupt capability. */
  setInterrupts(enable: boolean): void {
    this.#fn.writeConfig16(PCI_MSIX_FLAGS, enable ? PCI_MSIX_FLAGS_ENABLE : 0);
  }

  /**
   * `request_irq`: install `handler` for the device's MSI-X interrupt. From now on the kernel
   * waits on the device's MSI-X message (`Atomics.waitAsync`, so it never blocks the kernel) and
   * calls `handler` with the number of interrupts delivered since its previous call. Interrupts
   * delivered before this call, or while no handler was installed, are never passed to a handler.
   * The device only delivers while MSI-X is enabled ({@link setInterrupts}). A handler that throws
   * is logged and stays installed. `EBUSY` when a handler is already installed.
   */
  requestIrq(handler: IrqHandler): void {
    if (typeof handler !== 'function') {
      throw new KernelError('EINVAL', `${this.name}: the irq handler must be a function`);
    }
    if (this.#irq) throw new KernelError('EBUSY', `${this.name}: an irq handler is installed`);
    const action: IrqAction = { handler, seen: this.#fn.interruptMessage, active: true };
    this.#irq = action;
    void this.#serveIrq(action);
  }

  /**
   * `free_irq`: remove the handler installed with {@link requestIrq}. Once this returns the
   * handler is never called again; interrupts delivered from now on are dropped. Does nothing when
   * no handler is installed.
   */
  freeIrq(): void {
    const action = this.#irq;
    if (!action) return;
    action.active = false;
    this.#irq = undefined;
    // Release the pending wait instead of leaving it until the device's next interrupt.
    this.#fn.wakeInterruptWaiters();
  }

  async #serveIrq(action: IrqAction): Promise<void> {
    while (action.active) {
      const message = this.#fn.interruptMessage;
      // The word only grows (mod 2^32), even across a function-level reset.
      const count = (message - action.seen) >>> 0;
      if (count === 0) {
        await this.#fn.waitForInterrupt(action.seen);
        continue;
      }
      action.seen = message;
      try {
        action.handler(count);
      } catch (error) {
        this.#log.err(
          `irq ${this.name}: handler failed: ${(error as Error)?.stack ?? String(error)}`,
        );
      }
      // Let the rest of the kernel run between two bursts of a busy device.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  readConfig16(offset: number): number {
    return this.#fn.readConfig16(offset);
  }

  writeConfig16(offset: number, value: number): void {
    this.#fn.writeConfig16(offset, value);
  }

  /** `readl` of a BAR0 register. */
  readRegister(offset: number): number {
    return this.#fn.readRegister(offset);
  }

  /** `writel` of a BAR0 register. */
  writeRegister(offset: number, value: number): void {
    this.#fn.writeRegister(offset, value);
  }

  /**
   * `pcie_flr`: function-level reset. Returns once the function has no DMA in flight and is in
   * its power-on state (no bus mastering, registers cleared).
   */
  reset(): void {
    this.#fn.writeConfig16(PCI_EXP_DEVCTL, PCI_EXP_DEVCTL_BCR_FLR);
  }

  #setCommand(bit: number, enable: boolean): void {
    const command = this.#fn.readConfig16(PCI_COMMAND);
    this.#fn.writeConfig16(PCI_COMMAND, enable ? command | bit : command & ~bit);
  }
}

/** What {@link PciBus} needs to hand preserved devices over: KHO and the RAM its blob lives in. */
export interface PciLiveUpdate {
  readonly kho: KexecHandover;
  readonly memory: PhysicalMemory;
}

/** The PCI bus of this boot: devices found at enumeration and the drivers bound to them. */
export class PciBus {
  readonly devices: readonly PciDevice[];
  readonly #drivers: PciDriver[] = [];
  readonly #log: KernelLog;
  readonly #liveUpdate: PciLiveUpdate | undefined;
  /** Preservation refcounts by bdf (`pci_liveupdate_preserve`). */
  readonly #preserved = new Map<Bdf, number>();
  #handoverPhys: number | undefined;

  /**
   * Enumerate the machine's functions, logging each as Linux does. With `liveUpdate` on a KHO boot,
   * devices listed in the incoming {@link PCI_LU_SUBTREE} subtree are marked
   * {@link PciDevice.incoming}; a malformed subtree throws `PciHandoverError` (the kernel
   * panics). Without it, {@link preserve} fails with `EINVAL`.
   */
  constructor(mmio: MachineMmio, log: KernelLog, liveUpdate?: PciLiveUpdate) {
    this.#log = log;
    this.#liveUpdate = liveUpdate;
    this.devices = mmio.functions.map((buffers) => new PciDevice(new PciFunction(buffers), log));
    for (const dev of this.devices) {
      log.info(
        `pci ${dev.name}: [${hex4(dev.vendor)}:${hex4(dev.device)}] type 00 class 0x${dev.classCode.toString(16).padStart(6, '0')}`,
      );
    }
    this.#readIncoming();
  }

  /**
   * `pci_liveupdate_preserve`: keep the device at `bdf` running across the next kexec (bus
   * mastering on, no reset). Refcounted; the set crosses in KHO as `pci_ser`. `ENODEV` for no
   * such device, `EINVAL` when KHO is off, `EOVERFLOW` past 65535 references.
   */
  preserve(bdf: Bdf): void {
    const dev = this.find(bdf);
    const count = this.#preserved.get(dev.bdf) ?? 0;
    if (count === 0xffff) {
      throw new KernelError('EOVERFLOW', `pci ${dev.name}: too many preservations`);
    }
    this.#preserved.set(dev.bdf, count + 1);
    try {
      this.#publish();
    } catch (error) {
      if (count === 0) this.#preserved.delete(dev.bdf);
      else this.#preserved.set(dev.bdf, count);
      throw error;
    }
  }

  /**
   * `pci_liveupdate_unpreserve`: drop one {@link preserve} reference. `ENODEV` for no such
   * device, `EINVAL` when it is not preserved.
   */
  unpreserve(bdf: Bdf): void {
    const dev = this.find(bdf);
    const count = this.#preserved.get(dev.bdf);
    if (count === undefined) {
      throw new KernelError('EINVAL', `pci ${dev.name}: not preserved`);
    }
    if (count === 1) this.#preserved.delete(dev.bdf);
    else this.#preserved.set(dev.bdf, count - 1);
    this.#publish();
  }

  /** The {@link preserve} refcount of the device at `bdf` (0 when not preserved). */
  preserveCount(bdf: Bdf): number {
    return this.#preserved.get(this.find(bdf).bdf) ?? 0;
  }

  /**
   * `pci_liveupdate_finish`: the device the previous kernel preserved is adopted; clears
   * {@link PciDevice.incoming}. `ENODEV` for no such device, `EINVAL` when it is not incoming.
   */
  finishIncoming(bdf: Bdf): void {
    const dev = this.find(bdf);
    if (!dev.incoming) throw new KernelError('EINVAL', `pci ${dev.name}: not an incoming device`);
    dev.incoming = false;
  }

  /** Rewrite the `pci_ser` blob in KHO (new one first, so a failure keeps the old one). */
  #publish(): void {
    if (!this.#liveUpdate) throw new KernelError('EINVAL', 'pci: live update needs KHO');
    const { kho, memory } = this.#liveUpdate;
    let next: { phys: number; size: number } | undefined;
    if (this.#preserved.size > 0) {
      const bytes = encodePciSer(
        this.devices.length,
        [...this.#preserved].map(([bdf, refcount]) => ({ domain: 0, bdf, refcount })),
      );
      next = { phys: kho.allocPreserve(bytes.length), size: bytes.length };
      memory.write(next.phys, bytes);
    }
    if (this.#handoverPhys !== undefined) {
      kho.removeSubtree(this.#handoverPhys);
      kho.unpreserveFree(this.#handoverPhys);
      this.#handoverPhys = undefined;
    }
    if (next) {
      kho.addSubtree(PCI_LU_SUBTREE, next.phys, next.size);
      this.#handoverPhys = next.phys;
    }
  }

  /**
   * Read the incoming `pci_ser`. No subtree is a cold start only when no device masters the bus:
   * at kexec every device that was not preserved lost bus mastering, so one that still has it
   * was preserved and its subtree is damaged (a corrupted name reads as absent).
   */
  #readIncoming(): void {
    if (!this.#liveUpdate?.kho.isKhoBoot) return;
    const { kho, memory } = this.#liveUpdate;
    let blob;
    try {
      blob = kho.retrieveSubtree(PCI_LU_SUBTREE);
    } catch (error) {
      if (!KernelError.isInstance(error) || error.code !== 'ENOENT') {
        throw new PciHandoverError((error as Error).message);
      }
      const mastering = this.devices.filter((d) => d.busMaster).map((d) => d.name);
      if (mastering.length > 0) {
        throw new PciHandoverError(
          `no ${PCI_LU_SUBTREE} subtree, but ${mastering.join(', ')} still master the bus: the previous kernel preserved them and its handover is damaged`,
        );
      }
      return;
    }
    const devices = decodePciSer(memory.read(blob.phys, blob.size), this.devices.length, (bdf) =>
      this.devices.some((d) => d.bdf === bdf),
    );
    try {
      kho.restoreFree(blob.phys);
    } catch (error) {
      throw new PciHandoverError(
        `blob at 0x${blob.phys.toString(16)}: ${(error as Error).message}`,
      );
    }
    for (const { bdf } of devices) {
      const dev = this.find(bdf);
      dev.incoming = true;
      this.#log.info(`pci ${dev.name}: preserved by the previous kernel, not reset`);
    }
  }

  /** The devices the previous kernel preserved and nobody finished yet, in bus order. */
  get incomingDevices(): Bdf[] {
    return this.devices.filter((d) => d.incoming).map((d) => d.bdf);
  }

  /** The device at `bdf` (`"00:03.0"` or a packed BDF). `ENODEV` when there is none. */
  find(bdf: string | Bdf): PciDevice {
    const wanted = typeof bdf === 'string' ? parseBdf(bdf) : bdf;
    const dev = this.devices.find((d) => d.bdf === wanted);
    if (!dev) throw new KernelError('ENODEV', `no PCI device at ${formatBdf(wanted)}`);
    return dev;
  }

  /** `pci_register_driver`: bind `driver` to every matching unbound device. */
  registerDriver(driver: PciDriver): void {
    if (this.#drivers.some((d) => d.name === driver.name)) {
      throw new KernelError('EEXIST', `PCI driver ${driver.name} is already registered`);
    }
    this.#drivers.push(driver);
    for (const dev of this.devices) {
      if (
        dev.driver ||
        !driver.ids.some((id) => id.vendor === dev.vendor && id.device === dev.device)
      )
        continue;
      try {
        driver.probe(dev);
        dev.driver = driver;
        this.#log.info(`${driver.name} ${dev.name}: bound`);
      } catch (error) {
        this.#log.warn(`${driver.name} ${dev.name}: probe failed: ${(error as Error).message}`);
      }
    }
  }

  /** `pci_unregister_driver`: unbind (calling `remove`) and forget `driver`. */
  unregisterDriver(driver: PciDriver): void {
    const index = this.#drivers.indexOf(driver);
    if (index < 0) return;
    this.#drivers.splice(index, 1);
    for (const dev of this.devices) {
      if (dev.driver !== driver) continue;
      driver.remove?.(dev);
      dev.driver = undefined;
    }
  }

  /**
   * `pci_device_shutdown` for kexec: every device stops mastering the bus and is reset, so none
   * does DMA into memory the next kernel will reuse — except the devices preserved for a live
   * update ({@link preserve}), which keep bus mastering and are not reset.
   */
  shutdown(): void {
    for (const dev of this.devices) {
      dev.freeIrq();
      if (this.#preserved.has(dev.bdf)) {
        this.#log.info(`pci ${dev.name}: shutdown: preserved for live update, left running`);
        continue;
      }
      dev.setMaster(false);
      dev.reset();
      this.#log.info(`pci ${dev.name}: shutdown: bus mastering off, function reset`);
    }
  }
}

function hex4(n: number): string {
  return n.toString(16).padStart(4, '0');
}

/** The {@link PciBus} of this boot, in `ctx.services`. */
export const PCI_BUS_SERVICE: ServiceKey<PciBus> = Symbol.for('liveupdate.kernel.pci-bus');
