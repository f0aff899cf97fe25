import { Worker } from 'node:worker_threads';
import type { PhysicalMemory } from '../physical-memory.js';
import { DMA_COPY_DEVICE_ID, DMA_COPY_VENDOR_ID } from './dma-copy-device.js';
import { DmaCounterBlock, type DmaCounters } from './dma-counters.js';
import { IommuRegisters } from './iommu.js';
import { NIC_DEVICE_ID, NIC_VENDOR_ID } from './nic-device.js';
import {
  PCI_BAR_SIZE,
  PciFunction,
  formatBdf,
  parseBdf,
  type PciFunctionBuffers,
} from './pci-function.js';

/** A device of {@link MachineOptions.devices}. */
export type DeviceSpec =
  | {
      readonly kind: 'nic';
      /** `"bb:dd.f"`. */
      readonly bdf: string;
      /** Rate of the packet source while receive is enabled. Default 1000. */
      readonly packetsPerSecond?: number;
    }
  | {
      readonly kind: 'dma-copy';
      readonly bdf: string;
      /**
       * Most descriptors the engine completes per second, like a real engine's bandwidth: queued
       * work then lasts a known time, whatever the host's load. Default: no limit.
       */
      readonly copiesPerSecond?: number;
    };

export type DeviceKind = DeviceSpec['kind'];

/** One PCI function of the machine's bus, as it crosses to kernel and device workers. */
export type MmioFunction = PciFunctionBuffers &
  (
    | { readonly kind: 'nic'; readonly packetsPerSecond: number }
    | { readonly kind: 'dma-copy'; readonly copiesPerSecond: number }
  );

/**
 * The machine's MMIO: the IOMMU's register block, every PCI function's config space and BAR0,
 * and the hardware counters. These are hardware, not kernel state: each kernel receives them in
 * its `workerData`, as a real kernel finds the same registers at the same addresses.
 */
export interface MachineMmio {
  readonly iommu: SharedArrayBuffer;
  readonly functions: readonly MmioFunction[];
  readonly counters: SharedArrayBuffer;
}

/** @internal `workerData` of a device worker. */
export interface DeviceWorkerData {
  readonly ram: SharedArrayBuffer;
  readonly mmio: MachineMmio;
  readonly index: number;
}

const IDENTITY = {
  nic: { vendor: NIC_VENDOR_ID, device: NIC_DEVICE_ID, classCode: 0x020000 },
  'dma-copy': { vendor: DMA_COPY_VENDOR_ID, device: DMA_COPY_DEVICE_ID, classCode: 0x088000 },
} as const;
const BAR_WINDOW_BASE = 0xfe000000;

// Workers load built files: from the sources (under vitest) use the package's dist.
const DEVICE_WORKER = import.meta.url.endsWith('.ts')
  ? new URL('../../dist/devices/device-worker.js', import.meta.url)
  : new URL('./device-worker.js', import.meta.url);

/**
 * The hardware besides RAM: the IOMMU, the PCI bus and its devices, whose models run in their own
 * workers from {@link start} to {@link stop}, across every kernel.
 */
export class MachineHardware {
  readonly mmio: MachineMmio;
  /** The IOMMU's registers, as the machine (and tests) see them. */
  readonly iommu: IommuRegisters;
  readonly #functions: PciFunction[];
  readonly #counters: DmaCounterBlock;
  readonly #memory: PhysicalMemory;
  #workers: Worker[] = [];

  constructor(memory: PhysicalMemory, devices: readonly DeviceSpec[]) {
    this.#memory = memory;
    const seen = new Set<number>();
    const functions: MmioFunction[] = devices.map((spec, index) => {
      const bdf = parseBdf(spec.bdf);
      if (seen.has(bdf)) throw new RangeError(`two devices at ${formatBdf(bdf)}`);
      seen.add(bdf);
      const identity = IDENTITY[spec.kind];
      if (!identity) throw new RangeError(`unknown device kind ${JSON.stringify(spec.kind)}`);
      const fn = PciFunction.create(bdf, {
        ...identity,
        bar0Address: BAR_WINDOW_BASE + index * PCI_BAR_SIZE,
      });
      if (spec.kind === 'nic') {
        const rate = spec.packetsPerSecond ?? 1000;
        if (!(rate > 0)) throw new RangeError(`packetsPerSecond must be positive, got ${rate}`);
        return { ...fn.buffers, kind: 'nic', packetsPerSecond: rate };
      }
      const copies = spec.copiesPerSecond ?? Infinity;
      if (!(copies > 0)) throw new RangeError(`copiesPerSecond must be positive, got ${copies}`);
      return { ...fn.buffers, kind: 'dma-copy', copiesPerSecond: copies };
    });
    this.#functions = functions.map((f) => new PciFunction(f));
    this.#counters = DmaCounterBlock.allocate(functions.length);
    const iommu = IommuRegisters.allocate();
    this.mmio = { iommu, functions, counters: this.#counters.buffer };
    this.iommu = new IommuRegisters(iommu, this.#functions);
  }

  /** The function at `bdf` (`"00:03.0"`). */
  function(bdf: string): PciFunction {
    const wanted = parseBdf(bdf);
    const fn = this.#functions.find((f) => f.bdf === wanted);
    if (!fn) throw new RangeError(`no device at ${formatBdf(wanted)}`);
    return fn;
  }

  get functions(): readonly PciFunction[] {
    return this.#functions;
  }

  /** Counters of the device at `bdf`, or the sum over every device. */
  counters(bdf?: string): DmaCounters {
    const indices =
      bdf === undefined
        ? this.#functions.map((_, i) => i)
        : [this.#functions.indexOf(this.function(bdf))];
    const total: Record<string, number> = {};
    for (const i of indices) {
      for (const [name, value] of Object.entries(this.#counters.read(i))) {
        total[name] = (total[name] ?? 0) + value;
      }
    }
    return total as DmaCounters;
  }

  get running(): boolean {
    return this.#workers.length > 0;
  }

  /** Start every device's worker. */
  start(): void {
    if (this.running) return;
    for (const fn of this.#functions) fn.powerOn();
    this.#workers = this.mmio.functions.map((_, index) => {
      const workerData: DeviceWorkerData = { ram: this.#memory.buffer, mmio: this.mmio, index };
      const worker = new Worker(DEVICE_WORKER, { workerData });
      worker.unref();
      return worker;
    });
  }

  /** Power the devices off: reset each function, then end its worker. */
  async stop(): Promise<void> {
    const workers = this.#workers;
    this.#workers = [];
    for (const fn of this.#functions) fn.functionLevelReset();
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
