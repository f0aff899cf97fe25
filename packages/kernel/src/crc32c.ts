import CRC32C from 'crc-32/crc32c.js';

/**
 * CRC32C (Castagnoli, the kernel's `crc32c()`; iSCSI, ext4 and btrfs metadata use it) of `data`,
 * as an unsigned 32-bit number. Pass the previous result as `seed` to continue a checksum over
 * several pieces: `crc32c(b, crc32c(a))` equals `crc32c(a ++ b)`.
 *
 * The handover's metadata is checksummed with it (`luo-v2`); a handler can checksum the nested
 * structures its serialized state points at with it too.
 *
 * @example
 * ```ts
 * crc32c(new TextEncoder().encode('123456789')); // 0xe3069283
 * ```
 */
export function crc32c(data: Uint8Array, seed = 0): number {
  // crc-32 takes and returns the finished (inverted) value as a signed int32.
  return CRC32C.buf(data, seed | 0) >>> 0;
}
