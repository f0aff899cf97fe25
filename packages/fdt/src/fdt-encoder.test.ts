import { describe, expect, test } from 'vitest';
import { FdtError, encodeFdt, fdtValue } from './index.js';
import type { FdtNode } from './index.js';
import { chainTree, tinyTree } from '../test/sample-trees.js';

/** Hex string of big-endian words and raw byte groups, whitespace and comments ignored. */
function hex(text: string): Uint8Array {
  const digits = text.replace(/#.*$/gm, '').replace(/\s+/g, '');
  return new Uint8Array(digits.match(/../g)?.map((pair) => parseInt(pair, 16)) ?? []);
}

function node(
  name: string,
  properties: FdtNode['properties'] = [],
  children: FdtNode[] = [],
): FdtNode {
  return { name, properties, children };
}

function encodeError(tree: Parameters<typeof encodeFdt>[0]): FdtError {
  try {
    encodeFdt(tree);
  } catch (error) {
    if (error instanceof FdtError) return error;
    throw error;
  }
  throw new Error('encodeFdt did not throw');
}

describe('encodeFdt layout', () => {
  test('lays out a tiny tree byte for byte as the DTB format chapter prescribes', () => {
    // / { x = <1>; c { e; }; } with /memreserve/ 0x1000 0x2000 and boot CPU 3.
    // Reservation block at 40 (header size, 8-aligned): one entry + terminator = 32 bytes.
    // Structure block at 72: 14 words = 56 bytes. Strings block at 128: "x\0e\0". Total 132.
    const expected = hex(`
      d00dfeed  # magic
      00000084  # totalsize 132
      00000048  # off_dt_struct 72
      00000080  # off_dt_strings 128
      00000028  # off_mem_rsvmap 40
      00000011  # version 17
      00000010  # last_comp_version 16
      00000003  # boot_cpuid_phys 3
      00000004  # size_dt_strings 4
      00000038  # size_dt_struct 56
      0000000000001000 0000000000002000  # reservation 0x1000 + 0x2000
      0000000000000000 0000000000000000  # terminator
      00000001 00000000                  # 72: FDT_BEGIN_NODE "" (NUL padded to 4)
      00000003 00000004 00000000 00000001  # 80: FDT_PROP len 4, nameoff 0 ("x"), <1>
      00000001 63000000                  # 96: FDT_BEGIN_NODE "c"
      00000003 00000000 00000002         # 104: FDT_PROP len 0, nameoff 2 ("e")
      00000002                           # 116: FDT_END_NODE (c)
      00000002                           # 120: FDT_END_NODE (root)
      00000009                           # 124: FDT_END
      78006500                           # 128: "x\\0e\\0"
    `);
    expect(encodeFdt(tinyTree())).toEqual(expected);
  });

  test('writes a bare root node with an empty reservation block and boot CPU 0', () => {
    const expected = hex(`
      d00dfeed 00000048 00000038 00000048 00000028 00000011 00000010 00000000 00000000 00000010
      0000000000000000 0000000000000000  # 40: terminator only
      00000001 00000000 00000002 00000009  # 56: root begin, name, end node, end
    `);
    expect(encodeFdt(node(''))).toEqual(expected);
  });

  test('pads node names and property values to 4 bytes with zeros', () => {
    const blob = encodeFdt(
      node(
        '',
        [{ name: 'v', value: new Uint8Array([0xaa, 0xbb, 0xcc, 0xdd, 0xee]) }],
        [node('abcd')],
      ),
    );
    // Structure starts at 56 (no reservations): begin(4) + name(4), prop header 12, value 5 → 8.
    expect(blob.subarray(56 + 20, 56 + 28)).toEqual(hex('aabbccddee000000'));
    // "abcd" needs 5 bytes with its NUL, so it takes 8.
    expect(blob.subarray(56 + 32, 56 + 40)).toEqual(hex('6162636400000000'));
    expect(new DataView(blob.buffer).getUint32(56 + 40)).toBe(2); // FDT_END_NODE right after
  });

  test('stores each property name once, reusing the tail of a longer name as dtc does', () => {
    const tree = node(
      '',
      [
        { name: 'linux,phandle', value: fdtValue.u32(1) },
        { name: 'phandle', value: fdtValue.u32(1) },
      ],
      [node('a', [{ name: 'phandle', value: fdtValue.u32(2) }])],
    );
    const blob = encodeFdt(tree);
    const view = new DataView(blob.buffer);
    const stringsOffset = view.getUint32(12);
    expect(view.getUint32(32)).toBe(14); // "linux,phandle\0" only
    expect(new TextDecoder().decode(blob.subarray(stringsOffset))).toBe('linux,phandle\0');
    // nameoff of the second property (struct 56: begin 8 bytes, first prop 16 bytes) is 6.
    expect(view.getUint32(56 + 8 + 16 + 8)).toBe(6);
  });
});

describe('encodeFdt validation', () => {
  test('refuses a root node with a name', () => {
    expect(encodeError(node('root'))).toMatchObject({ code: 'BAD_NAME', path: '/' });
  });

  test('refuses an empty child node name, naming the parent path', () => {
    const error = encodeError(node('', [], [node('a', [], [node('')])]));
    expect(error.code).toBe('BAD_NAME');
    expect(error.message).toContain('node /a');
  });

  test.each([
    ['a space', 'my node'],
    ['a NUL', 'a\0b'],
    ['a slash', 'a/b'],
    ['two @', 'a@1@2'],
    ['an empty unit address', 'a@'],
    ['only a unit address', '@1'],
    ['a non-ASCII letter', 'nœud'],
  ])('refuses a node name with %s', (_what, name) => {
    expect(encodeError(node('', [], [node(name)])).code).toBe('BAD_NAME');
  });

  test.each([
    ['empty', ''],
    ['with a NUL', 'a\0'],
    ['with an @', 'a@b'],
    ['with a space', 'a b'],
  ])('refuses a property name that is %s', (_what, name) => {
    const error = encodeError(node('', [], [node('n', [{ name, value: new Uint8Array() }])]));
    expect(error.code).toBe('BAD_NAME');
    expect(error.message).toContain('node /n');
  });

  test('accepts every character the specification allows in names', () => {
    const tree = node(
      '',
      [{ name: '#az-AZ,09._+?', value: new Uint8Array() }],
      [node('az-AZ,09._+@unit,1.2_3+4-5')],
    );
    expect(() => encodeFdt(tree)).not.toThrow();
  });

  test('refuses two properties with the same name in one node', () => {
    const value = new Uint8Array();
    const error = encodeError(
      node(
        '',
        [],
        [
          node('n', [
            { name: 'p', value },
            { name: 'p', value },
          ]),
        ],
      ),
    );
    expect(error).toMatchObject({ code: 'DUPLICATE', path: '/n' });
    expect(error.message).toContain('"p"');
  });

  test('refuses two child nodes with the same name', () => {
    const error = encodeError(node('', [], [node('a', [], [node('b@1'), node('b@1')])]));
    expect(error).toMatchObject({ code: 'DUPLICATE', path: '/a' });
  });

  test('refuses a property value that is not a Uint8Array', () => {
    const value = [1, 2] as unknown as Uint8Array;
    expect(encodeError(node('', [{ name: 'p', value }])).code).toBe('BAD_VALUE');
  });

  test('refuses a node that contains itself instead of recursing forever', () => {
    const a = node('a');
    a.children.push(a);
    expect(encodeError(node('', [], [a])).code).toBe('BAD_VALUE');
  });

  test('accepts the same node object in two places', () => {
    const shared = node('shared', [{ name: 'p', value: fdtValue.u32(7) }]);
    expect(() =>
      encodeFdt(node('', [], [node('a', [], [shared]), node('b', [], [shared])])),
    ).not.toThrow();
  });

  test.each([
    ['size 0', { address: 0x1000n, size: 0n }],
    ['address and size 0', { address: 0n, size: 0n }],
    ['a negative address', { address: -1n, size: 1n }],
    ['a size over 64 bits', { address: 0n, size: 1n << 64n }],
    ['a number address', { address: 1 as unknown as bigint, size: 1n }],
  ])('refuses a reservation with %s', (_what, reservation) => {
    const error = encodeError({ root: node(''), reservations: [reservation], bootCpuId: 0 });
    expect(error.code).toBe('BAD_VALUE');
  });

  test.each([-1, 2 ** 32, 1.5, Number.NaN])('refuses boot CPU id %s', (bootCpuId) => {
    expect(encodeError({ root: node(''), reservations: [], bootCpuId }).code).toBe('BAD_VALUE');
  });

  test('encodes a tree far deeper than the call stack would allow for recursion', () => {
    const blob = encodeFdt(chainTree(20_000));
    expect(blob.length).toBeGreaterThan(20_000 * 20);
  });
});
