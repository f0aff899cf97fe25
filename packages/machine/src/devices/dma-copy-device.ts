import type { DmaEngine } from './dma-engine.js';

/**
 * The DMA copy engine: copies N bytes from IOVA A to IOVA B for each descriptor the driver
 * queues, and writes a completion record.
 *
 * BAR0 registers (u32, byte offsets):
 *
 * | offset | register | who writes |
 * |---|---|---|
 * | 0x00 | CTRL: bit 0 enable | driver |
 * | 0x04 / 0x08 | descriptor ring base IOVA, low / high | driver |
 * | 0x0c | ring size (descriptors) | driver |
 * | 0x10 | head: next descriptor the engine processes | engine |
 * | 0x14 | tail (doorbell): descriptors in [head, tail) are queued | driver |
 * | 0x18 | descriptors completed | engine |
 *
 * A descriptor is 32 bytes: u64 source IOVA, u64 destination IOVA, u32 length, u32 flags, u64
 * completion record IOVA. Flags: bit 0 {@link DMA_COPY_DESC_INTERRUPT} (interrupt on completion);
 * other bits are ignored. The completion record is 8 bytes: u32 status
 * ({@link DMA_COPY_STATUS}), u32 bytes copied.
 *
 * Interrupt on completion: once a descriptor with {@link DMA_COPY_DESC_INTERRUPT} is complete (its
 * completion record written, head and completed count advanced, whatever its status), the engine
 * raises one interrupt, delivered as an MSI-X message while MSI-X is enabled in config space and
 * lost while it is disabled or masked (`PciFunction.raiseInterrupt`).
 */
export const DMA_COPY_REG_CTRL = 0x00;
export const DMA_COPY_REG_BASE_LO = 0x04;
export const DMA_COPY_REG_BASE_HI = 0x08;
export const DMA_COPY_REG_SIZE = 0x0c;
export const DMA_COPY_REG_HEAD = 0x10;
export const DMA_COPY_REG_TAIL = 0x14;
export const DMA_COPY_REG_COMPLETED = 0x18;
export const DMA_COPY_CTRL_ENABLE = 1 << 0;
export const DMA_COPY_DESC_SIZE = 32;
/** Descriptor flag: raise an interrupt when this descriptor completes. */
export const DMA_COPY_DESC_INTERRUPT = 1 << 0;
export const DMA_COPY_COMPLETION_SIZE = 8;
/** Longest copy of one descriptor. */
export const DMA_COPY_MAX_LENGTH = 1 << 20;
export const DMA_COPY_STATUS = { SUCCESS: 1, FAULT: 2, INVALID: 3 } as const;
export const DMA_COPY_VENDOR_ID = 0x8086;
export const DMA_COPY_DEVICE_ID = 0x0b25;

export class DmaCopyDevice {
  readonly #dma: DmaEngine;
  readonly #copiesPerSecond: number;
  /** When the engine last found work after being idle, and what it has done since. */
  #busySince: number | undefined;
  #doneSince = 0;

  /** @param copiesPerSecond most descriptors completed per second; `Infinity` for no limit. */
  constructor(dma: DmaEngine, copiesPerSecond = Infinity) {
    this.#dma = dma;
    this.#copiesPerSecond = copiesPerSecond;
  }

  /** Process the queued descriptors that are due at `now` (ms): all of them without a limit. */
  step(now: number): void {
    const fn = this.#dma.fn;
    for (;;) {
      const size = fn.readRegister(DMA_COPY_REG_SIZE);
      const head = fn.readRegister(DMA_COPY_REG_HEAD);
      if (
        !fn.memoryDecode ||
        (fn.readRegister(DMA_COPY_REG_CTRL) & DMA_COPY_CTRL_ENABLE) === 0 ||
        size === 0 ||
        head === fn.readRegister(DMA_COPY_REG_TAIL) % size
      ) {
        this.#busySince = undefined;
        return;
      }
      if (Number.isFinite(this.#copiesPerSecond)) {
        if (this.#busySince === undefined) {
          this.#busySince = now;
          this.#doneSince = 0;
        }
        const allowed = 1 + Math.floor(((now - this.#busySince) * this.#copiesPerSecond) / 1000);
        if (this.#doneSince >= allowed) return;
      }
      const ran = this.#dma.transaction(() => this.#copy(head, size));
      if (!ran) return;
      this.#doneSince++;
    }
  }

  #copy(head: number, size: number): void {
    const fn = this.#dma.fn;
    const base =
      fn.readRegister(DMA_COPY_REG_BASE_LO) + fn.readRegister(DMA_COPY_REG_BASE_HI) * 2 ** 32;
    const descriptor =
      head < size ? this.#dma.read(base + head * DMA_COPY_DESC_SIZE, DMA_COPY_DESC_SIZE) : null;
    // Counted before the completion record and the registers publish the copy.
    this.#dma.count('copies');
    let interrupt = false;
    if (descriptor) {
      const view = new DataView(descriptor.buffer);
      const source = Number(view.getBigUint64(0, true));
      const destination = Number(view.getBigUint64(8, true));
      const length = view.getUint32(16, true);
      const completion = Number(view.getBigUint64(24, true));
      interrupt = (view.getUint32(20, true) & DMA_COPY_DESC_INTERRUPT) !== 0;
      let status: number = DMA_COPY_STATUS.INVALID;
      let copied = 0;
      if (length <= DMA_COPY_MAX_LENGTH) {
        const data = this.#dma.read(source, length);
        status = DMA_COPY_STATUS.FAULT;
        if (data && this.#dma.write(destination, data)) {
          status = DMA_COPY_STATUS.SUCCESS;
          copied = length;
        }
      }
      const record = new Uint8Array(DMA_COPY_COMPLETION_SIZE);
      new DataView(record.buffer).setUint32(0, status, true);
      new DataView(record.buffer).setUint32(4, copied, true);
      this.#dma.write(completion, record);
    }
    fn.writeRegister(DMA_COPY_REG_HEAD, (head + 1) % size);
    fn.addRegister(DMA_COPY_REG_COMPLETED, 1);
    if (interrupt) this.#dma.raiseInterrupt();
  }
}
