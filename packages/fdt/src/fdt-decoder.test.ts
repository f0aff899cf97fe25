import { Buffer } from 'node:buffer';
import { describe, expect, test } from 'vitest';
import {
  FDT_DEFAULT_MAX_DEPTH,
  FdtError,
  decodeFdt,
  encodeFdt,
  fdtNode,
  fdtValue,
} from './index.js';
import type { Fdt, FdtErrorCode } from './index.js';
import { HeaderOffset, MutableBlob, Token, words } from '../test/mutable-blob.js';
import {
  chainTree,
  khoTree,
  richTree,
  tinyBlobLayout as L,
  tinyTree,
} from '../test/sample-trees.js';

function tiny(): MutableBlob {
  return new MutableBlob(encodeFdt(tinyTree()));
}

function decodeError(blob: Uint8Array, options?: { maxDepth?: number }): FdtError {
  try {
    decodeFdt(blob, options);
  } catch (error) {
    if (error instanceof FdtError) return error;
    throw error;
  }
  throw new Error('decodeFdt did not throw');
}

function expectError(
  blob: MutableBlob | Uint8Array,
  code: FdtErrorCode,
  offset?: number,
): FdtError {
  const error = decodeError(blob instanceof MutableBlob ? blob.bytes : blob);
  expect(error.code, error.message).toBe(code);
  if (offset !== undefined) expect(error.offset, error.message).toBe(offset);
  return error;
}

describe('decodeFdt round trip', () => {
  const samples: [string, () => Fdt][] = [
    ['a tiny tree with a reservation and boot CPU', tinyTree],
    ['a KHO-like tree with little-endian u64 values', khoTree],
    ['a tree with nesting, empty values, string lists and reservations', richTree],
    ['a chain 64 nodes deep', () => ({ root: chainTree(64), reservations: [], bootCpuId: 0 })],
    ['an empty root', () => ({ root: fdtNode(''), reservations: [], bootCpuId: 0xffffffff })],
  ];

  test.each(samples)('decodes what it encodes for %s', (_what, make) => {
    expect(decodeFdt(encodeFdt(make()))).toEqual(make());
  });

  test.each(samples)('re-encodes its own blob byte for byte for %s', (_what, make) => {
    const blob = encodeFdt(make());
    expect(encodeFdt(decodeFdt(blob))).toEqual(blob);
  });

  test('treats a bare root node as no reservations and boot CPU 0', () => {
    const root = fdtNode('', { a: fdtValue.u32(5) });
    expect(decodeFdt(encodeFdt(root))).toEqual({ root, reservations: [], bootCpuId: 0 });
  });

  test('returns property values that do not share memory with the input', () => {
    const blob = encodeFdt(tinyTree());
    const tree = decodeFdt(blob);
    blob.fill(0xff);
    expect(tree).toEqual(tinyTree());
  });

  test('copies values out of a Node Buffer too, whose slice would not copy', () => {
    const buffer = Buffer.from(encodeFdt(tinyTree()));
    const tree = decodeFdt(buffer);
    buffer.fill(0xff);
    expect(tree.root.properties[0]?.value).toEqual(fdtValue.u32(1));
    expect(Buffer.isBuffer(tree.root.properties[0]?.value)).toBe(false);
  });

  test('decodes a blob that starts part way into a larger buffer', () => {
    const blob = encodeFdt(richTree());
    const page = new Uint8Array(blob.length + 100);
    page.set(blob, 37);
    expect(decodeFdt(page.subarray(37))).toEqual(richTree());
  });

  test('ignores bytes past totalsize', () => {
    const blob = encodeFdt(tinyTree());
    const padded = new Uint8Array(blob.length + 64).fill(0xee);
    padded.set(blob);
    expect(decodeFdt(padded)).toEqual(tinyTree());
  });

  test('skips FDT_NOP tokens before the root, between tokens and before FDT_END', () => {
    const blob = tiny()
      .spliceStruct(L.end, 0, words(Token.nop))
      .spliceStruct(L.cBegin, 0, words(Token.nop, Token.nop))
      .spliceStruct(L.rootBegin, 0, words(Token.nop));
    expect(decodeFdt(blob.bytes)).toEqual(tinyTree());
  });

  test('reads version 16 blobs, whose structure block size is taken from the layout', () => {
    const blob = tiny().setU32(HeaderOffset.version, 16).setU32(HeaderOffset.structSize, 0);
    expect(decodeFdt(blob.bytes)).toEqual(tinyTree());
  });

  test('reads blobs of a later version that stays compatible with 17', () => {
    const blob = tiny().setU32(HeaderOffset.version, 20);
    expect(decodeFdt(blob.bytes)).toEqual(tinyTree());
  });

  test('accepts blocks in another order than dtc writes them, with free space between', () => {
    // Move the strings block to the end with a gap and point the header at it.
    const original = encodeFdt(tinyTree());
    const blob = new MutableBlob(new Uint8Array(L.totalSize + 12));
    blob.bytes.set(original);
    blob.bytes.set(original.subarray(L.strings), L.totalSize + 8);
    blob.setU32(HeaderOffset.stringsOffset, L.totalSize + 8);
    blob.setU32(HeaderOffset.totalSize, L.totalSize + 12);
    expect(decodeFdt(blob.bytes)).toEqual(tinyTree());
  });
});

describe('decodeFdt depth limit', () => {
  test(`accepts nodes ${FDT_DEFAULT_MAX_DEPTH} deep and refuses ${FDT_DEFAULT_MAX_DEPTH + 1} by default`, () => {
    expect(() => decodeFdt(encodeFdt(chainTree(FDT_DEFAULT_MAX_DEPTH)))).not.toThrow();
    const error = decodeError(encodeFdt(chainTree(FDT_DEFAULT_MAX_DEPTH + 1)));
    expect(error.code).toBe('TOO_DEEP');
    expect(error.message).toContain(`/n${'/n'.repeat(FDT_DEFAULT_MAX_DEPTH)}`);
  });

  test('counts the root as depth 0 when applying a custom maxDepth', () => {
    const blob = encodeFdt(chainTree(3));
    expect(() => decodeFdt(blob, { maxDepth: 3 })).not.toThrow();
    expect(decodeError(blob, { maxDepth: 2 }).code).toBe('TOO_DEEP');
    expect(decodeError(encodeFdt(chainTree(1)), { maxDepth: 0 }).code).toBe('TOO_DEEP');
    expect(() => decodeFdt(encodeFdt(fdtNode('')), { maxDepth: 0 })).not.toThrow();
  });

  test.each([-1, 1.5, Number.NaN])('refuses maxDepth %s', (maxDepth) => {
    expect(decodeError(encodeFdt(tinyTree()), { maxDepth }).code).toBe('BAD_VALUE');
  });
});

describe('decodeFdt header and layout errors', () => {
  test('reports a blob shorter than the header as TRUNCATED', () => {
    expectError(encodeFdt(tinyTree()).subarray(0, 39), 'TRUNCATED');
  });

  test('reports a wrong magic number as BAD_MAGIC', () => {
    expectError(tiny().setU32(HeaderOffset.magic, 0xedfe0dd0), 'BAD_MAGIC', 0);
  });

  test('reports version 15 as BAD_VERSION', () => {
    expectError(tiny().setU32(HeaderOffset.version, 15), 'BAD_VERSION', HeaderOffset.version);
  });

  test('reports last_comp_version 18 as BAD_VERSION', () => {
    const blob = tiny()
      .setU32(HeaderOffset.version, 18)
      .setU32(HeaderOffset.lastCompatibleVersion, 18);
    expectError(blob, 'BAD_VERSION', HeaderOffset.lastCompatibleVersion);
  });

  test('reports a totalsize larger than the blob as TRUNCATED', () => {
    const blob = tiny().setU32(HeaderOffset.totalSize, L.totalSize + 1);
    expect(expectError(blob, 'TRUNCATED', HeaderOffset.totalSize).message).toContain('133');
  });

  test('reports a totalsize smaller than the header as BAD_LAYOUT', () => {
    expectError(tiny().setU32(HeaderOffset.totalSize, 39), 'BAD_LAYOUT', HeaderOffset.totalSize);
  });

  test('reports a strings block past totalsize as BAD_LAYOUT', () => {
    const blob = tiny().setU32(HeaderOffset.stringsSize, L.stringsSize + 1);
    expectError(blob, 'BAD_LAYOUT', HeaderOffset.stringsSize);
  });

  test('reports a structure block past totalsize as BAD_LAYOUT', () => {
    const blob = tiny().setU32(HeaderOffset.structSize, 0xfffffffc);
    expectError(blob, 'BAD_LAYOUT', HeaderOffset.structSize);
  });

  test('reports a structure block overlapping the header as BAD_LAYOUT', () => {
    expectError(
      tiny().setU32(HeaderOffset.structOffset, 36),
      'BAD_LAYOUT',
      HeaderOffset.structOffset,
    );
  });

  test('reports a reservation block overlapping the header as BAD_LAYOUT', () => {
    const blob = tiny().setU32(HeaderOffset.memReserveOffset, 32);
    expectError(blob, 'BAD_LAYOUT', HeaderOffset.memReserveOffset);
  });

  test('reports a misaligned structure block as BAD_LAYOUT', () => {
    const blob = tiny().setU32(HeaderOffset.structOffset, L.struct + 2);
    expectError(blob, 'BAD_LAYOUT', HeaderOffset.structOffset);
  });

  test('reports a reservation block that is not 8-byte aligned as BAD_LAYOUT', () => {
    const blob = tiny().setU32(HeaderOffset.memReserveOffset, L.memReserve + 4);
    expectError(blob, 'BAD_LAYOUT', HeaderOffset.memReserveOffset);
  });

  test('reports a strings block overlapping the structure block as BAD_LAYOUT', () => {
    expectError(tiny().setU32(HeaderOffset.stringsOffset, L.end), 'BAD_LAYOUT');
  });

  test('reports a structure block overlapping the reservation block as BAD_LAYOUT', () => {
    // Reservations span [40, 72); a structure block at 56 collides with them.
    expectError(tiny().setU32(HeaderOffset.structOffset, 56), 'BAD_LAYOUT');
  });

  test('reports a reservation block with no terminator inside the blob as TRUNCATED', () => {
    // Without the zero entry at 56 the scan walks through the non-zero struct and strings data.
    const blob = tiny()
      .setU32(L.reservationTerminator + 4, 0x1)
      .setU32(L.reservationTerminator + 12, 0x1);
    expect(expectError(blob, 'TRUNCATED').message).toContain('reservation');
  });

  test('reports a reservation entry of size 0 before the terminator as BAD_LAYOUT', () => {
    const blob = tiny().setU32(L.memReserve + 12, 0);
    expectError(blob, 'BAD_LAYOUT', L.memReserve);
  });
});

describe('decodeFdt structure block errors', () => {
  test('reports a structure block not starting with FDT_BEGIN_NODE as BAD_TOKEN', () => {
    expectError(tiny().setU32(L.rootBegin, Token.prop), 'BAD_TOKEN', L.rootBegin);
  });

  test('reports a root node with a name as BAD_NAME', () => {
    expectError(tiny().setAscii(L.rootName, 'r'), 'BAD_NAME', L.rootName);
  });

  test('reports an unknown token as BAD_TOKEN with the node path', () => {
    const error = expectError(tiny().setU32(L.eProp, 0x5), 'BAD_TOKEN', L.eProp);
    expect(error.message).toContain('0x5');
    expect(error.path).toBe('/c');
  });

  test('reports a property value running past the structure block as TRUNCATED', () => {
    const error = expectError(tiny().setU32(L.xLength, 1000), 'TRUNCATED', L.xLength);
    expect(error.message).toContain('node /');
  });

  test('reports a property name offset outside the strings block as BAD_STRING', () => {
    const blob = tiny().setU32(L.eNameOffset, L.stringsSize);
    expectError(blob, 'BAD_STRING', L.eNameOffset);
  });

  test('reports a property name not NUL-terminated inside the strings block as BAD_STRING', () => {
    // Strings are "x\0e\0"; overwriting the last NUL leaves "e" running off the block.
    const blob = tiny().setAscii(L.strings + 3, 'a');
    expectError(blob, 'BAD_STRING', L.strings + 2);
  });

  test('reports a node name not NUL-terminated inside the structure block as BAD_STRING', () => {
    // Cut the structure block right after the "c" of the child's name.
    const blob = tiny().setU32(HeaderOffset.structSize, L.cName + 1 - L.struct);
    expectError(blob, 'BAD_STRING', L.cName);
  });

  test('reports an invalid character in a node name as BAD_NAME', () => {
    const error = expectError(tiny().setAscii(L.cName, '$'), 'BAD_NAME', L.cName);
    expect(error.message).toContain('U+0024');
  });

  test('reports an invalid character in a property name as BAD_NAME', () => {
    const error = expectError(tiny().setAscii(L.strings + 2, '\x7f'), 'BAD_NAME', L.strings + 2);
    expect(error.path).toBe('/c');
  });

  test('reports FDT_END_NODE without an open node as BAD_TOKEN', () => {
    expectError(tiny().setU32(L.end, Token.endNode), 'BAD_TOKEN', L.end);
  });

  test('reports FDT_END while a node is open as BAD_TOKEN', () => {
    const error = expectError(tiny().setU32(L.cEnd, Token.end), 'BAD_TOKEN', L.cEnd);
    expect(error.path).toBe('/c');
  });

  test('reports a second root node as BAD_TOKEN', () => {
    const blob = tiny().spliceStruct(L.end, 0, words(Token.beginNode, 0, Token.endNode));
    expectError(blob, 'BAD_TOKEN', L.end);
  });

  test('reports a property outside any node as BAD_TOKEN', () => {
    const blob = tiny().spliceStruct(L.end, 0, words(Token.prop, 0, 0));
    expectError(blob, 'BAD_TOKEN', L.end);
  });

  test('reports data after FDT_END as BAD_LAYOUT', () => {
    const blob = tiny().spliceStruct(L.end + 4, 0, words(Token.nop));
    expectError(blob, 'BAD_LAYOUT', L.end + 4);
  });

  test('reports a structure block without FDT_END as TRUNCATED', () => {
    expectError(tiny().spliceStruct(L.end, 4), 'TRUNCATED', L.end);
  });

  test('reports a property after a child node as BAD_TOKEN', () => {
    // Swap "x = <1>" (16 bytes at 80) with "c { e; }" (24 bytes at 96): x then follows c.
    const original = encodeFdt(tinyTree());
    const blob = tiny();
    blob.bytes.set(original.subarray(L.cBegin, L.rootEnd), L.xProp);
    blob.bytes.set(original.subarray(L.xProp, L.cBegin), L.xProp + (L.rootEnd - L.cBegin));
    const error = expectError(blob, 'BAD_TOKEN', L.xProp + (L.rootEnd - L.cBegin));
    expect(error.message).toContain('"x" follows child nodes');
  });

  test('reports two properties with the same name as DUPLICATE', () => {
    const root = fdtNode('', { a: fdtValue.u32(1), b: fdtValue.u32(2) });
    const blob = new MutableBlob(encodeFdt(root));
    // No reservations: struct at 56; props at 64 and 80; "b" is at strings offset 2.
    expect(blob.u32(80 + 8)).toBe(2);
    const error = expectError(blob.setU32(80 + 8, 0), 'DUPLICATE', 80);
    expect(error.message).toContain('"a"');
  });

  test('reports two child nodes with the same name as DUPLICATE', () => {
    const blob = new MutableBlob(encodeFdt(fdtNode('', {}, [fdtNode('a'), fdtNode('b')])));
    // Struct at 56: root begin + name (8), a begin at 64 + name + end (12), b begin at 76.
    const error = expectError(blob.setAscii(80, 'a'), 'DUPLICATE', 76);
    expect(error.path).toBe('/');
  });

  test('reports nesting deeper than maxDepth as TOO_DEEP', () => {
    const error = decodeError(encodeFdt(tinyTree()), { maxDepth: 0 });
    expect(error).toMatchObject({ code: 'TOO_DEEP', offset: L.cBegin, path: '/c' });
  });

  test('puts the offset and node path in the message', () => {
    const error = decodeError(tiny().setU32(L.eProp, 0x5).bytes);
    expect(error.message).toBe(`unknown token 0x5 (node /c, offset ${L.eProp})`);
  });
});
