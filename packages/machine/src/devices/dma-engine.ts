import { PAGE_SIZE, type PhysicalMemory } from '../physical-memory.js';
import type { DmaCounterBlock } from './dma-counters.js';
import { IommuTranslation, type IommuRegisters } from './iommu.js';
import type { PciFunction } from './pci-function.js';

/**
 * A device's DMA engine: reads and writes RAM by IOVA through the IOMMU. Every access is
 * translated page by page before any byte moves, so a transaction that faults anywhere is dropped
 * whole and logged, and writes nothing.
 */
export class DmaEngine {
  readonly fn: PciFunction;
  readonly #memory: PhysicalMemory;
  readonly #registers: IommuRegisters;
  readonly #translation: IommuTranslation;
  readonly #counters: DmaCounterBlock;
  readonly #index: number;

  constructor(
    fn: PciFunction,
    memory: PhysicalMemory,
    registers: IommuRegisters,
    counters: DmaCounterBlock,
    index: number,
  ) {
    this.fn = fn;
    this.#memory = memory;
    this.#registers = registers;
    this.#translation = new IommuTranslation(memory, registers);
    this.#counters = counters;
    this.#index = index;
  }

  /**
   * Run `body` as one transaction: nothing happens unless the function is bus master; a reset or
   * an IOMMU invalidation waits until it ends. Returns `false` when bus mastering is off.
   */
  transaction(body: () => void): boolean {
    if (!this.fn.beginDma()) return false;
    try {
      this.#translation.sync(this.fn);
      body();
    } finally {
      this.fn.endDma();
    }
    return true;
  }

  /** Read `length` bytes at `iova`, or `null` after a fault. Only inside {@link transaction}. */
  read(iova: number, length: number): Uint8Array | null {
    const chunks = this.#translate(iova, length, false);
    if (!chunks) return null;
    const out = new Uint8Array(length);
    let at = 0;
    for (const { phys, size } of chunks) {
      out.set(this.#memory.view(phys, size), at);
      at += size;
    }
    this.#count(length);
    return out;
  }

  /**
   * Write `data` at `iova`; `false` after a fault (nothing written). Only inside
   * {@link transaction}. `beforeLanding` runs once the whole range translated, before any byte
   * lands: counters it bumps are visible to whoever sees the bytes (a completion record).
   */
  write(iova: number, data: Uint8Array, beforeLanding?: () => void): boolean {
    const chunks = this.#translate(iova, data.length, true);
    if (!chunks) return false;
    this.#count(data.length);
    beforeLanding?.();
    let at = 0;
    for (const { phys, size } of chunks) {
      this.#memory.write(phys, data.subarray(at, at + size));
      at += size;
    }
    return true;
  }

  /**
   * Signal an interrupt through the function's MSI-X message ({@link PciFunction.raiseInterrupt});
   * the `interrupts` counter counts it only when it is delivered, and before the message goes
   * out, so a waiter the message wakes already sees it counted. Only inside {@link transaction}.
   * Returns whether it was delivered.
   */
  raiseInterrupt(): boolean {
    return this.fn.raiseInterrupt(() => this.#counters.add(this.#index, 'interrupts'));
  }

  count(name: 'drops' | 'packets' | 'copies'): void {
    this.#counters.add(this.#index, name);
  }

  #count(bytes: number): void {
    this.#counters.add(this.#index, 'dmaOps');
    this.#counters.add(this.#index, 'dmaBytes', bytes);
  }

  #translate(
    iova: number,
    length: number,
    write: boolean,
  ): { phys: number; size: number }[] | null {
    const chunks: { phys: number; size: number }[] = [];
    let at = iova;
    const end = iova + length;
    while (at < end) {
      const size = Math.min(end - at, PAGE_SIZE - (at % PAGE_SIZE));
      const result = this.#translation.translate(this.fn.bdf, at, write);
      if (result.fault !== undefined || !this.#memory.contains(result.phys, size)) {
        this.#registers.recordFault({
          iova: at,
          bdf: this.fn.bdf,
          reason: result.fault ?? 'ADDRESS_OUT_OF_RANGE',
          write,
        });
        this.#counters.add(this.#index, 'faults');
        return null;
      }
      chunks.push({ phys: result.phys, size });
      at += size;
    }
    return chunks;
  }
}
