import { execFileSync, spawnSync } from 'node:child_process';
import { describe, expect, test } from 'vitest';
import { decodeFdt, encodeFdt, fdtNode, fdtValue } from './index.js';
import type { Fdt } from './index.js';
import { khoTree, richTree } from '../test/sample-trees.js';

// Cross-checks against the reference implementation. CI installs device-tree-compiler; a
// machine without it skips these tests rather than failing.
const hasDtc = spawnSync('dtc', ['--version']).status === 0;

/** Runs dtc on stdin (its default input) and returns stdout; -q hides dtc's style warnings. */
function dtc(args: string[], input: Uint8Array | string): Uint8Array {
  return new Uint8Array(execFileSync('dtc', ['-q', ...args], { input, maxBuffer: 1 << 24 }));
}

const dts = `/dts-v1/;
/memreserve/ 0x80000000 0x100000;
/memreserve/ 0xfffffffffffff000 0x1000;
/ {
	#address-cells = <2>;
	#size-cells = <1>;
	compatible = "acme,kho-test", "acme,generic";
	model = "dtc made this";
	empty-flag;
	bytes = [de ad be ef 01];
	wide = /bits/ 64 <0x1122334455667788>;
	cells = <0x1 0xffffffff 42>;
	chosen {
		bootargs = "console=ttyS0 kho=on";
		target = <&gpu>;
	};
	gpu: gpu@10000000 {
		reg = <0x0 0x10000000 0x1000>;
		deep { deeper { deepest { value = <7>; }; }; };
	};
};
`;

function expectedFromDts(): Fdt {
  const cells = new Uint8Array([
    ...fdtValue.u32(1),
    ...fdtValue.u32(0xffffffff),
    ...fdtValue.u32(42),
  ]);
  const reg = new Uint8Array([
    ...fdtValue.u32(0),
    ...fdtValue.u32(0x10000000),
    ...fdtValue.u32(0x1000),
  ]);
  return {
    root: fdtNode(
      '',
      {
        '#address-cells': fdtValue.u32(2),
        '#size-cells': fdtValue.u32(1),
        compatible: fdtValue.stringList(['acme,kho-test', 'acme,generic']),
        model: fdtValue.string('dtc made this'),
        'empty-flag': fdtValue.empty(),
        bytes: new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0x01]),
        wide: fdtValue.u64(0x1122334455667788n),
        cells,
      },
      [
        fdtNode('chosen', {
          bootargs: fdtValue.string('console=ttyS0 kho=on'),
          target: fdtValue.u32(1), // dtc resolves &gpu to the phandle it assigns
        }),
        fdtNode('gpu@10000000', { reg, phandle: fdtValue.u32(1) }, [
          fdtNode('deep', {}, [
            fdtNode('deeper', {}, [fdtNode('deepest', { value: fdtValue.u32(7) })]),
          ]),
        ]),
      ],
    ),
    reservations: [
      { address: 0x80000000n, size: 0x100000n },
      { address: 0xfffffffffffff000n, size: 0x1000n },
    ],
    bootCpuId: 5,
  };
}

describe.skipIf(!hasDtc)('dtc cross-check', () => {
  test('dtc decompiles our blob and shows our nodes, properties and values', () => {
    const text = new TextDecoder().decode(dtc(['-I', 'dtb', '-O', 'dts'], encodeFdt(richTree())));
    for (const line of [
      '/memreserve/\t0x0000000000001000 0x0000000000001000;',
      '/memreserve/\t0xffffffffffff0000 0x000000000000ffff;',
      '#address-cells = <0x02>;',
      'compatible = "acme,board-v2\\0acme,board";',
      'bootargs = "console=ttyS0 quiet";',
      'kexec,empty-list;',
      'cpu@1 {',
      'reg = <0x01>;',
      'device_type = "cpu";',
      'reg = <0x00 0x80000000 0x00 0x40000000>;',
      'empty-node {',
      'dma-coherent;',
      'odd = [01 02 03];',
    ]) {
      expect(text).toContain(line);
    }
  });

  test('dtc decompiles a KHO-like blob with its little-endian u64 bytes intact', () => {
    const text = new TextDecoder().decode(dtc(['-I', 'dtb', '-O', 'dts'], encodeFdt(khoTree())));
    expect(text).toContain('compatible = "kho-v1";');
    // 0x1_2345_6000 little-endian is 00 60 45 23 01 00 00 00, read by dtc as two BE cells.
    expect(text).toContain('preserved-memory-map = <0x604523 0x1000000>;');
    expect(text).toContain('memblock {');
    expect(text).toContain('LUO {');
  });

  test.each([
    ['rich', richTree],
    ['KHO-like', khoTree],
  ])('dtc re-emits our %s blob byte for byte', (_what, make) => {
    const ours = encodeFdt(make());
    expect(dtc(['-I', 'dtb', '-O', 'dtb'], ours)).toEqual(ours);
  });

  test('our decoder reads a dtc-compiled tree with numbers, strings, lists, nesting and /memreserve/', () => {
    const blob = dtc(['-I', 'dts', '-O', 'dtb', '-b', '5'], dts);
    expect(decodeFdt(blob)).toEqual(expectedFromDts());
  });

  test('re-encoding a dtc-compiled tree reproduces dtc bytes exactly', () => {
    const blob = dtc(['-I', 'dts', '-O', 'dtb', '-b', '5'], dts);
    expect(encodeFdt(decodeFdt(blob))).toEqual(blob);
  });

  test('our decoder reads the version 16 blob dtc writes on request', () => {
    const blob = dtc(['-I', 'dts', '-O', 'dtb', '-b', '5', '-V', '16'], dts);
    expect(new DataView(blob.buffer, blob.byteOffset).getUint32(20)).toBe(16);
    expect(decodeFdt(blob)).toEqual(expectedFromDts());
  });
});
