// Edits valid blobs at computed offsets, for the malformation and fuzz tests.
import { readFdtHeader } from '../src/index.js';

/** Header field offsets, straight from the spec's `struct fdt_header`. */
export const HeaderOffset = {
  magic: 0,
  totalSize: 4,
  structOffset: 8,
  stringsOffset: 12,
  memReserveOffset: 16,
  version: 20,
  lastCompatibleVersion: 24,
  bootCpuId: 28,
  stringsSize: 32,
  structSize: 36,
} as const;

/** Structure block tokens, from the spec. */
export const Token = { beginNode: 1, endNode: 2, prop: 3, nop: 4, end: 9 } as const;

/** A copy of a blob with big-endian word access and block-aware splicing. */
export class MutableBlob {
  bytes: Uint8Array;

  constructor(blob: Uint8Array) {
    this.bytes = blob.slice();
  }

  private get view(): DataView {
    return new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
  }

  u32(at: number): number {
    return this.view.getUint32(at);
  }

  setU32(at: number, value: number): this {
    this.view.setUint32(at, value);
    return this;
  }

  setByte(at: number, value: number): this {
    this.bytes[at] = value;
    return this;
  }

  setAscii(at: number, text: string): this {
    for (let i = 0; i < text.length; i++) this.bytes[at + i] = text.charCodeAt(i);
    return this;
  }

  /**
   * Replaces `deleteCount` bytes at `at` (inside the structure block, or at its end) with
   * `insert`, growing or shrinking the block and moving the strings block and total size with it,
   * so only the edit itself is wrong.
   */
  spliceStruct(at: number, deleteCount: number, insert: Uint8Array = new Uint8Array(0)): this {
    const header = readFdtHeader(this.bytes);
    const delta = insert.length - deleteCount;
    const out = new Uint8Array(this.bytes.length + delta);
    out.set(this.bytes.subarray(0, at));
    out.set(insert, at);
    out.set(this.bytes.subarray(at + deleteCount), at + insert.length);
    this.bytes = out;
    this.setU32(HeaderOffset.structSize, header.structSize + delta);
    this.setU32(HeaderOffset.totalSize, header.totalSize + delta);
    if (header.stringsOffset >= at + deleteCount) {
      this.setU32(HeaderOffset.stringsOffset, header.stringsOffset + delta);
    }
    return this;
  }
}

/** Big-endian u32 words as bytes, for splicing tokens in. */
export function words(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setUint32(i * 4, v));
  return out;
}
