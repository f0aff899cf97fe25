import { PAGE_SIZE, type PhysicalMemory } from '../physical-memory.js';
import type { Bdf, PciFunction } from './pci-function.js';

/**
 * The IOMMU: a register block in a `SharedArrayBuffer` and translation structures in RAM, in a
 * VT-d-like format documented in `docs/iommu-hardware.md`. Register offsets are byte offsets of
 * 32-bit registers.
 *
 * @packageDocumentation
 */

export const IOMMU_REG_VERSION = 0x00;
/** Global control and status: bit 0 translation enable, bit 1 IOTLB disable. */
export const IOMMU_REG_GCTL = 0x04;
export const IOMMU_REG_RTADDR_LO = 0x08;
export const IOMMU_REG_RTADDR_HI = 0x0c;
/** Invalidation generation: every global IOTLB invalidation increments it. */
export const IOMMU_REG_INVALIDATION = 0x10;
/** Number of faults ever recorded; the log keeps the last {@link IOMMU_FAULT_LOG_ENTRIES}. */
export const IOMMU_REG_FAULT_COUNT = 0x14;
/** Fault log: entries of 16 bytes: u64 IOVA, u32 BDF, u32 reason | write << 8. */
export const IOMMU_REG_FAULT_LOG = 0x40;
export const IOMMU_FAULT_LOG_ENTRIES = 16;
const IOMMU_REGISTER_BYTES = IOMMU_REG_FAULT_LOG + IOMMU_FAULT_LOG_ENTRIES * 16;

export const IOMMU_GCTL_TE = 1 << 0;
/** Set, the IOTLB caches nothing: every translation walks the tables in RAM (for benchmarks). */
export const IOMMU_GCTL_IOTLB_DISABLE = 1 << 1;
export const IOMMU_VERSION = 0x10;

/** Root and context entries: 16 bytes; bit 0 of the low u64 is "present". */
export const IOMMU_ENTRY_SIZE = 16;
/** Page-table entries: u64 with bit 0 read, bit 1 write, bit 7 page size (2 MiB leaf at level 2). */
export const IOMMU_PTE_READ = 1 << 0;
export const IOMMU_PTE_WRITE = 1 << 1;
export const IOMMU_PTE_PAGE_SIZE = 1 << 7;
export const IOMMU_PT_LEVELS = 4;
export const IOMMU_PTES_PER_TABLE = 512;
/** Context entry high u64: bits 8-23 hold the domain id. */
export const IOMMU_CONTEXT_DID_SHIFT = 8;
/** IOVAs are 48 bits wide (4 levels × 9 bits + 12). */
export const IOMMU_IOVA_BITS = 48;

/** Why a DMA was blocked. */
export const IOMMU_FAULT_REASON = {
  ROOT_NOT_PRESENT: 1,
  CONTEXT_NOT_PRESENT: 2,
  PTE_NOT_PRESENT: 3,
  WRITE_DENIED: 4,
  READ_DENIED: 5,
  ADDRESS_OUT_OF_RANGE: 6,
} as const;
export type IommuFaultReason = keyof typeof IOMMU_FAULT_REASON;

/** One entry of the fault log. */
export interface IommuFault {
  readonly iova: number;
  readonly bdf: Bdf;
  readonly reason: IommuFaultReason;
  readonly write: boolean;
}

const REASON_NAMES = Object.fromEntries(
  Object.entries(IOMMU_FAULT_REASON).map(([name, code]) => [code, name as IommuFaultReason]),
);

/**
 * The register block. The kernel's driver and the machine wrap the same buffer; the device
 * models use it through {@link IommuTranslation}.
 */
export class IommuRegisters {
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;
  readonly #functions: readonly PciFunction[];

  /** `functions` are the bus's functions whose translations an invalidation waits for. */
  constructor(buffer: SharedArrayBuffer, functions: readonly PciFunction[]) {
    this.buffer = buffer;
    this.#words = new Int32Array(buffer);
    this.#functions = functions;
  }

  /** A register block in its power-on state: translation off, no root table. */
  static allocate(): SharedArrayBuffer {
    const buffer = new SharedArrayBuffer(IOMMU_REGISTER_BYTES);
    new Int32Array(buffer)[IOMMU_REG_VERSION / 4] = IOMMU_VERSION;
    return buffer;
  }

  get translationEnabled(): boolean {
    return (Atomics.load(this.#words, IOMMU_REG_GCTL / 4) & IOMMU_GCTL_TE) !== 0;
  }

  /** Turn translation on or off. Off, DMA addresses are physical addresses. */
  setTranslationEnabled(enabled: boolean): void {
    if (enabled) Atomics.or(this.#words, IOMMU_REG_GCTL / 4, IOMMU_GCTL_TE);
    else Atomics.and(this.#words, IOMMU_REG_GCTL / 4, ~IOMMU_GCTL_TE);
    this.invalidateAll();
  }

  /** Whether devices cache leaf translations (GCTL bit 1 clear, the power-on state). */
  get iotlbEnabled(): boolean {
    return (Atomics.load(this.#words, IOMMU_REG_GCTL / 4) & IOMMU_GCTL_IOTLB_DISABLE) === 0;
  }

  /** Turn the IOTLB on or off; off, every translation walks the tables. Invalidates. */
  setIotlbEnabled(enabled: boolean): void {
    if (enabled) Atomics.and(this.#words, IOMMU_REG_GCTL / 4, ~IOMMU_GCTL_IOTLB_DISABLE);
    else Atomics.or(this.#words, IOMMU_REG_GCTL / 4, IOMMU_GCTL_IOTLB_DISABLE);
    this.invalidateAll();
  }

  /** Physical address of the root table. */
  get rootTable(): number {
    return readAddress(this.#words, IOMMU_REG_RTADDR_LO / 4);
  }

  /** Set the root table pointer; takes effect for translations after {@link invalidateAll}. */
  setRootTable(phys: number): void {
    if (!Number.isSafeInteger(phys) || phys < 0 || phys % PAGE_SIZE !== 0) {
      throw new RangeError(`root table address ${phys} is not page-aligned`);
    }
    Atomics.store(this.#words, IOMMU_REG_RTADDR_HI / 4, Math.floor(phys / 2 ** 32));
    Atomics.store(this.#words, IOMMU_REG_RTADDR_LO / 4, (phys % 2 ** 32) | 0);
  }

  /** The current invalidation generation. */
  get invalidationGeneration(): number {
    return Atomics.load(this.#words, IOMMU_REG_INVALIDATION / 4);
  }

  /**
   * Global IOTLB invalidation with a wait descriptor: when this returns, no DMA anywhere uses a
   * translation (or a context or root entry) read before the call.
   */
  invalidateAll(): void {
    const generation = Atomics.add(this.#words, IOMMU_REG_INVALIDATION / 4, 1) + 1;
    for (const fn of this.#functions) fn.waitForInvalidation(generation);
  }

  get faultCount(): number {
    return Atomics.load(this.#words, IOMMU_REG_FAULT_COUNT / 4);
  }

  /** The fault log, oldest first (at most {@link IOMMU_FAULT_LOG_ENTRIES}). */
  faults(): IommuFault[] {
    const count = this.faultCount;
    const out: IommuFault[] = [];
    for (let n = Math.max(0, count - IOMMU_FAULT_LOG_ENTRIES); n < count; n++) {
      const base = (IOMMU_REG_FAULT_LOG + (n % IOMMU_FAULT_LOG_ENTRIES) * 16) / 4;
      const code = Atomics.load(this.#words, base + 3);
      out.push({
        iova: readAddress(this.#words, base),
        bdf: Atomics.load(this.#words, base + 2),
        reason: REASON_NAMES[code & 0xff] ?? 'ADDRESS_OUT_OF_RANGE',
        write: (code & 0x100) !== 0,
      });
    }
    return out;
  }

  /** @internal Hardware side: record a fault. */
  recordFault(fault: IommuFault): void {
    const n = Atomics.add(this.#words, IOMMU_REG_FAULT_COUNT / 4, 1);
    const base = (IOMMU_REG_FAULT_LOG + (n % IOMMU_FAULT_LOG_ENTRIES) * 16) / 4;
    Atomics.store(this.#words, base, (fault.iova % 2 ** 32) | 0);
    Atomics.store(this.#words, base + 1, Math.floor(fault.iova / 2 ** 32));
    Atomics.store(this.#words, base + 2, fault.bdf);
    Atomics.store(
      this.#words,
      base + 3,
      IOMMU_FAULT_REASON[fault.reason] | (fault.write ? 0x100 : 0),
    );
  }
}

function readAddress(words: Int32Array, index: number): number {
  return (Atomics.load(words, index) >>> 0) + (Atomics.load(words, index + 1) >>> 0) * 2 ** 32;
}

/** A translated page: physical address of the 4 KiB page and its permissions. */
interface Translation {
  readonly phys: number;
  readonly read: boolean;
  readonly write: boolean;
}

/** Result of {@link IommuTranslation.translate}. */
export type TranslationResult =
  | { readonly phys: number; readonly fault?: undefined }
  | { readonly fault: IommuFaultReason; readonly phys?: undefined };

/**
 * The translation path of one requester: walks root, context and page tables in RAM and caches
 * leaf translations in an IOTLB, flushed when the IOMMU's invalidation generation moves. Device
 * models call {@link sync} at the start of each DMA transaction (after marking it in flight), so
 * an invalidation that returns has flushed every translation a later access could use.
 */
export class IommuTranslation {
  readonly #memory: PhysicalMemory;
  readonly #registers: IommuRegisters;
  readonly #iotlb = new Map<number, Translation>();
  #generation = -1;
  #enabled = false;
  #cache = true;
  #root = 0;

  constructor(memory: PhysicalMemory, registers: IommuRegisters) {
    this.#memory = memory;
    this.#registers = registers;
  }

  /** Number of cached translations. */
  get iotlbSize(): number {
    return this.#iotlb.size;
  }

  /**
   * Pick up register state and flush the IOTLB if an invalidation happened since the last call;
   * `fn` acknowledges the invalidation.
   */
  sync(fn?: PciFunction): void {
    const generation = this.#registers.invalidationGeneration;
    if (generation !== this.#generation) {
      this.#iotlb.clear();
      this.#generation = generation;
      this.#enabled = this.#registers.translationEnabled;
      this.#cache = this.#registers.iotlbEnabled;
      this.#root = this.#registers.rootTable;
    }
    fn?.acknowledgeInvalidation(generation);
  }

  /** Translate one access of `bdf` at `iova` (within one 4 KiB page). */
  translate(bdf: Bdf, iova: number, write: boolean): TranslationResult {
    if (!Number.isSafeInteger(iova) || iova < 0 || iova >= 2 ** IOMMU_IOVA_BITS) {
      return { fault: 'ADDRESS_OUT_OF_RANGE' };
    }
    if (!this.#enabled) return { phys: iova };
    const page = Math.floor(iova / PAGE_SIZE);
    const key = bdf * 2 ** 36 + page;
    let entry = this.#iotlb.get(key);
    if (!entry) {
      const walked = this.#walk(bdf, page * PAGE_SIZE);
      if ('fault' in walked) return { fault: walked.fault };
      entry = walked;
      if (this.#cache) this.#iotlb.set(key, entry);
    }
    if (write ? !entry.write : !entry.read) {
      return { fault: write ? 'WRITE_DENIED' : 'READ_DENIED' };
    }
    return { phys: entry.phys + (iova % PAGE_SIZE) };
  }

  #walk(bdf: Bdf, iova: number): Translation | { fault: IommuFaultReason } {
    const memory = this.#memory;
    const entryAt = (table: number, index: number): { lo: number; hi: number } | null => {
      const at = table + index * 8;
      if (!memory.contains(at, 8)) return null;
      return { lo: memory.readU32(at), hi: memory.readU32(at + 4) };
    };
    const address = (e: { lo: number; hi: number }): number =>
      e.lo - (e.lo % PAGE_SIZE) + e.hi * 2 ** 32;

    const rootEntry = entryAt(this.#root, (bdf >> 8) * 2);
    if (!rootEntry || (rootEntry.lo & 1) === 0) return { fault: 'ROOT_NOT_PRESENT' };
    const contextTable = address(rootEntry);
    const contextEntry = entryAt(contextTable, (bdf & 0xff) * 2);
    if (!contextEntry || (contextEntry.lo & 1) === 0) return { fault: 'CONTEXT_NOT_PRESENT' };
    let table = address(contextEntry);
    for (let level = IOMMU_PT_LEVELS; level >= 1; level--) {
      const shift = 12 + 9 * (level - 1);
      const index = Math.floor(iova / 2 ** shift) % IOMMU_PTES_PER_TABLE;
      const pte = entryAt(table, index);
      if (!pte) return { fault: 'ADDRESS_OUT_OF_RANGE' };
      const read = (pte.lo & IOMMU_PTE_READ) !== 0;
      const write = (pte.lo & IOMMU_PTE_WRITE) !== 0;
      if (!read && !write) return { fault: 'PTE_NOT_PRESENT' };
      const next = address(pte);
      if (level === 1 || (level === 2 && (pte.lo & IOMMU_PTE_PAGE_SIZE) !== 0)) {
        const phys = next + (iova % 2 ** shift);
        if (!memory.contains(phys, PAGE_SIZE)) return { fault: 'ADDRESS_OUT_OF_RANGE' };
        return { phys, read, write };
      }
      table = next;
    }
    return { fault: 'PTE_NOT_PRESENT' };
  }
}
