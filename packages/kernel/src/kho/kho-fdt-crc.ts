import { crc32c } from '../crc32c.js';

const ZERO_CRC = new Uint8Array(4);

/**
 * The `kho-v2` root FDT checksum (`fdt-crc`): CRC32C of the whole blob as given (its `totalsize`
 * bytes) with the 4 bytes at `valueOffset` — the `fdt-crc` value itself — taken as zero, the
 * convention of the ext4 superblock and the GPT header. The blob is not changed.
 */
export function khoFdtCrc(blob: Uint8Array, valueOffset: number): number {
  if (!Number.isSafeInteger(valueOffset) || valueOffset < 0 || valueOffset + 4 > blob.length) {
    throw new RangeError(`fdt-crc value at ${valueOffset} is outside the ${blob.length}-byte blob`);
  }
  const head = crc32c(blob.subarray(0, valueOffset));
  return crc32c(blob.subarray(valueOffset + 4), crc32c(ZERO_CRC, head));
}
