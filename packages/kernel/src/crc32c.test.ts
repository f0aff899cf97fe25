import { describe, expect, it } from 'vitest';
import { crc32c } from './crc32c.js';

// RFC 3720 appendix B.4: CRC32C test vectors, given there as the bytes stored little-endian.
function rfc3720(bytes: string): number {
  return Buffer.from(bytes.replace(/ /g, ''), 'hex').readUInt32LE(0);
}

describe('crc32c', () => {
  it('gives the RFC 3720 B.4 results', () => {
    const increasing = Uint8Array.from({ length: 32 }, (_, i) => i);
    const decreasing = Uint8Array.from({ length: 32 }, (_, i) => 31 - i);
    expect(crc32c(new Uint8Array(32))).toBe(rfc3720('aa 36 91 8a'));
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(rfc3720('43 ab a8 62'));
    expect(crc32c(increasing)).toBe(rfc3720('4e 79 dd 46'));
    expect(crc32c(decreasing)).toBe(rfc3720('5c db 3f 11'));
  });

  it('gives the check value of "123456789" as an unsigned number', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
  });

  it('continues over pieces from a seed as over the whole', () => {
    const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff);
    expect(crc32c(data.subarray(400), crc32c(data.subarray(0, 400)))).toBe(crc32c(data));
  });

  it('changes when one bit of the data changes', () => {
    const data = new Uint8Array(4096);
    const before = crc32c(data);
    data[2049] = 0x10;
    expect(crc32c(data)).not.toBe(before);
  });
});
