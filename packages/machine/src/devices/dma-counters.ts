/**
 * Counters the hardware keeps per device, in one `SharedArrayBuffer` of 64-bit slots so tests (and
 * the demo) can prove what a device did, whichever kernel was running.
 */
export const DMA_COUNTER = {
  /** DMA transactions that reached RAM. */
  dmaOps: 0,
  /** Bytes read or written in RAM by DMA. */
  dmaBytes: 1,
  /** DMA transactions the IOMMU blocked. */
  faults: 2,
  /** Packets a NIC dropped (ring full, no bus mastering, or a fault). */
  drops: 3,
  /**
   * Interrupts raised and delivered: each one incremented the function's MSI-X message word. An
   * interrupt raised while MSI-X is disabled or masked is lost and not counted.
   */
  interrupts: 4,
  /** Packets a NIC delivered into its ring. */
  packets: 5,
  /** Copy descriptors a copy engine completed. */
  copies: 6,
} as const;
export type DmaCounterName = keyof typeof DMA_COUNTER;
export type DmaCounters = Readonly<Record<DmaCounterName, number>>;

const SLOTS = 8;

/** The counters of every device of a machine. */
export class DmaCounterBlock {
  readonly buffer: SharedArrayBuffer;
  readonly #slots: BigInt64Array;

  constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.#slots = new BigInt64Array(buffer);
  }

  static allocate(devices: number): DmaCounterBlock {
    return new DmaCounterBlock(new SharedArrayBuffer(Math.max(1, devices) * SLOTS * 8));
  }

  add(device: number, name: DmaCounterName, delta = 1): void {
    Atomics.add(this.#slots, device * SLOTS + DMA_COUNTER[name], BigInt(delta));
  }

  read(device: number): DmaCounters {
    const out = {} as Record<DmaCounterName, number>;
    for (const [name, slot] of Object.entries(DMA_COUNTER) as [DmaCounterName, number][]) {
      out[name] = Number(Atomics.load(this.#slots, device * SLOTS + slot));
    }
    return out;
  }
}
