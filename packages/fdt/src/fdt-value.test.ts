import { describe, expect, test } from 'vitest';
import {
  FdtError,
  fdtNode,
  fdtValue,
  readString,
  readStringList,
  readU32,
  readU64,
} from './index.js';

function valueError(make: () => unknown): FdtError {
  try {
    make();
  } catch (error) {
    if (error instanceof FdtError) return error;
    throw error;
  }
  throw new Error('did not throw');
}

/** Stores `value` as property `p` of a node so the readers can read it back. */
function holding(value: Uint8Array) {
  return fdtNode('n', { p: value });
}

describe('fdtValue', () => {
  test('writes u32 big-endian and reads it back', () => {
    expect(fdtValue.u32(0x12345678)).toEqual(new Uint8Array([0x12, 0x34, 0x56, 0x78]));
    for (const v of [0, 1, 0x80000000, 0xffffffff])
      expect(readU32(holding(fdtValue.u32(v)), 'p')).toBe(v);
  });

  test('writes u64 big-endian by default and reads it back', () => {
    expect(fdtValue.u64(0x0102030405060708n)).toEqual(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
    for (const v of [0n, 1n, 0xffff_ffff_ffff_ffffn])
      expect(readU64(holding(fdtValue.u64(v)), 'p')).toBe(v);
  });

  test('writes u64 little-endian for KHO and reads it back only as little-endian', () => {
    const value = fdtValue.u64(0x0102030405060708n, { littleEndian: true });
    expect(value).toEqual(new Uint8Array([8, 7, 6, 5, 4, 3, 2, 1]));
    expect(readU64(holding(value), 'p', { littleEndian: true })).toBe(0x0102030405060708n);
    expect(readU64(holding(value), 'p')).toBe(0x0807060504030201n);
  });

  test('writes a string as UTF-8 with one trailing NUL and reads it back', () => {
    expect(fdtValue.string('ok')).toEqual(new Uint8Array([0x6f, 0x6b, 0]));
    for (const s of ['', 'console=ttyS0', 'ünïcødé 🚀'])
      expect(readString(holding(fdtValue.string(s)), 'p')).toBe(s);
  });

  test('writes a string list as NUL-terminated strings back to back and reads it back', () => {
    expect(fdtValue.stringList(['a', 'bc'])).toEqual(new Uint8Array([0x61, 0, 0x62, 0x63, 0]));
    for (const list of [[], [''], ['', ''], ['acme,board-v2', 'acme,board'], ['é', '', 'x']]) {
      expect(readStringList(holding(fdtValue.stringList(list)), 'p')).toEqual(list);
    }
  });

  test('copies bytes so later changes to the source do not reach the value', () => {
    const source = new Uint8Array([1, 2, 3]);
    const value = fdtValue.bytes(source);
    source[0] = 9;
    expect(value).toEqual(new Uint8Array([1, 2, 3]));
  });

  test('makes a fresh empty value each time', () => {
    expect(fdtValue.empty()).toEqual(new Uint8Array());
    expect(fdtValue.empty()).not.toBe(fdtValue.empty());
  });

  test.each([-1, 2 ** 32, 0.5, Number.NaN])('refuses u32 %s as BAD_VALUE', (v) => {
    expect(valueError(() => fdtValue.u32(v)).code).toBe('BAD_VALUE');
  });

  test.each([-1n, 1n << 64n])('refuses u64 %s as BAD_VALUE', (v) => {
    expect(valueError(() => fdtValue.u64(v)).code).toBe('BAD_VALUE');
  });

  test('refuses a u64 given as a number', () => {
    expect(valueError(() => fdtValue.u64(1 as unknown as bigint)).code).toBe('BAD_VALUE');
  });

  test('refuses strings containing NUL or a lone surrogate', () => {
    expect(valueError(() => fdtValue.string('a\0b')).code).toBe('BAD_VALUE');
    expect(valueError(() => fdtValue.string('\ud800')).code).toBe('BAD_VALUE');
    expect(valueError(() => fdtValue.stringList(['ok', 'a\0'])).message).toContain('item 1');
  });
});
