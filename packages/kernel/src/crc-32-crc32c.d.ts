// crc-32 types only its main entry; this is the shape of its CRC32C entry (the same functions).
declare module 'crc-32/crc32c.js' {
  /** CRC32C of `data`, continuing from `seed`; a signed 32-bit integer. */
  export function buf(data: Uint8Array, seed?: number): number;
}
