import { describe, expect, test } from 'vitest';
import { FDT_HEADER_SIZE, FDT_MAGIC, FdtError, encodeFdt, readFdtHeader } from './index.js';
import type { FdtErrorCode } from './index.js';
import { HeaderOffset, MutableBlob } from '../test/mutable-blob.js';
import { tinyBlobLayout as L, tinyTree } from '../test/sample-trees.js';

function headerError(bytes: Uint8Array): FdtErrorCode {
  try {
    readFdtHeader(bytes);
  } catch (error) {
    if (error instanceof FdtError) return error.code;
    throw error;
  }
  throw new Error('readFdtHeader did not throw');
}

describe('readFdtHeader', () => {
  test('reads every field of an encoded blob', () => {
    expect(readFdtHeader(encodeFdt(tinyTree()))).toEqual({
      magic: FDT_MAGIC,
      totalSize: L.totalSize,
      structOffset: L.struct,
      stringsOffset: L.strings,
      memReserveOffset: L.memReserve,
      version: 17,
      lastCompatibleVersion: 16,
      bootCpuId: 3,
      stringsSize: L.stringsSize,
      structSize: L.structSize,
    });
  });

  test('needs only the first 40 bytes, to learn how many more to read', () => {
    const head = encodeFdt(tinyTree()).slice(0, FDT_HEADER_SIZE);
    expect(readFdtHeader(head).totalSize).toBe(L.totalSize);
  });

  test('reports fewer than 40 bytes as TRUNCATED', () => {
    expect(headerError(encodeFdt(tinyTree()).slice(0, FDT_HEADER_SIZE - 1))).toBe('TRUNCATED');
    expect(headerError(new Uint8Array())).toBe('TRUNCATED');
  });

  test('reports a wrong magic as BAD_MAGIC even when the input is short', () => {
    expect(headerError(new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 0]))).toBe('BAD_MAGIC');
  });

  test.each([
    ['version 15', 15, 15],
    ['last_comp_version 18', 18, 18],
    ['last_comp_version above version', 16, 17],
  ])('reports %s as BAD_VERSION', (_what, version, lastCompatible) => {
    const blob = new MutableBlob(encodeFdt(tinyTree()))
      .setU32(HeaderOffset.version, version)
      .setU32(HeaderOffset.lastCompatibleVersion, lastCompatible);
    expect(headerError(blob.bytes)).toBe('BAD_VERSION');
  });

  test('reports a totalsize below 40 as BAD_LAYOUT', () => {
    const blob = new MutableBlob(encodeFdt(tinyTree())).setU32(HeaderOffset.totalSize, 0);
    expect(headerError(blob.bytes)).toBe('BAD_LAYOUT');
  });
});
