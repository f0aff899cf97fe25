/** Structure block tokens (big-endian u32, 4-byte aligned), from the DTB format chapter. */
export const FdtToken = {
  beginNode: 0x1,
  endNode: 0x2,
  prop: 0x3,
  nop: 0x4,
  end: 0x9,
} as const;

/** Size of one reservation entry: u64 address + u64 size. */
export const FDT_RESERVATION_ENTRY_SIZE = 16;

/** Rounds `n` up to a multiple of 4, the structure block's alignment. */
export function alignTo4(n: number): number {
  return n + ((4 - (n % 4)) % 4);
}
