import { FdtError, quote } from './fdt-error.js';

/** Options for 64-bit values. */
export interface FdtU64Options {
  /**
   * Store/read the value little-endian. Standard cells are big-endian; Kexec HandOver writes its
   * u64 properties in the CPU's native order, which is little-endian on x86.
   */
  littleEndian?: boolean;
}

const U64_MAX = (1n << 64n) - 1n;
const LONE_SURROGATE = /\p{Surrogate}/u;
const utf8 = new TextEncoder();

/** Encodes `s` as UTF-8 plus a NUL, refusing what could not be read back as the same string. */
function encodeString(s: string, what: string): Uint8Array {
  if (typeof s !== 'string') throw new FdtError('BAD_VALUE', `${what} is not a string`);
  if (s.includes('\0')) throw new FdtError('BAD_VALUE', `${what} ${quote(s)} contains NUL`);
  // TextEncoder would silently turn a lone surrogate into U+FFFD.
  if (LONE_SURROGATE.test(s)) {
    throw new FdtError('BAD_VALUE', `${what} ${quote(s)} contains a lone surrogate`);
  }
  const body = utf8.encode(s);
  const out = new Uint8Array(body.length + 1);
  out.set(body);
  return out;
}

/**
 * Builders for property values in the standard encodings.
 * Each returns a fresh `Uint8Array`; invalid input throws `FdtError` `BAD_VALUE`.
 */
export const fdtValue = {
  /** One big-endian 32-bit cell, e.g. `#address-cells = <2>`. `v` must be an integer 0 … 2^32−1. */
  u32(v: number): Uint8Array {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new FdtError('BAD_VALUE', `u32 value ${String(v)} is not an integer in 0..0xffffffff`);
    }
    const out = new Uint8Array(4);
    new DataView(out.buffer).setUint32(0, v);
    return out;
  },

  /** A 64-bit value, big-endian (two cells) unless `littleEndian` is set. `v` must be 0 … 2^64−1. */
  u64(v: bigint, opts: FdtU64Options = {}): Uint8Array {
    if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) {
      throw new FdtError('BAD_VALUE', `u64 value ${String(v)} is not a bigint in 0..2^64-1`);
    }
    const out = new Uint8Array(8);
    new DataView(out.buffer).setBigUint64(0, v, opts.littleEndian === true);
    return out;
  },

  /** A NUL-terminated UTF-8 string. The string must not contain NUL. */
  string(s: string): Uint8Array {
    return encodeString(s, 'string');
  },

  /** Strings one after another, each NUL-terminated (`compatible = "a", "b"`). `[]` gives an empty value. */
  stringList(list: readonly string[]): Uint8Array {
    const parts = list.map((s, i) => encodeString(s, `string list item ${i}`));
    const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  },

  /** A copy of raw bytes, so later changes to `b` do not reach the tree. */
  bytes(b: Uint8Array): Uint8Array {
    if (!(b instanceof Uint8Array))
      throw new FdtError('BAD_VALUE', 'bytes value is not a Uint8Array');
    return new Uint8Array(b); // copies; Buffer#slice would return a view
  },

  /** An empty value, as used by boolean properties such as `dma-coherent`. */
  empty(): Uint8Array {
    return new Uint8Array(0);
  },
};
