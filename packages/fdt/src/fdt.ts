import type { FdtNode } from './fdt-node.js';

/** One entry of the memory reservation block: a physical range the next kernel must not use. */
export interface FdtReservation {
  /** Physical start address, 0 ≤ address < 2^64. */
  address: bigint;
  /**
   * Length in bytes, 1 ≤ size < 2^64. Size 0 cannot be stored: the block ends with an all-zero
   * entry, and libfdt (Linux, dtc) stops at the first entry of size 0.
   */
  size: bigint;
}

/** A whole flattened device tree: the node tree plus the header data that travels with it. */
export interface Fdt {
  /** The root node (name `''`). */
  root: FdtNode;
  /** Memory reservation block entries, in order, without the terminator. */
  reservations: FdtReservation[];
  /** `boot_cpuid_phys` header field: physical id of the boot CPU (u32). */
  bootCpuId: number;
}
