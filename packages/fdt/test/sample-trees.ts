// Valid trees shared by the test files: each exercises a different part of the format.
import { encodeFdt, fdtNode, fdtValue } from '../src/index.js';
import type { Fdt, FdtNode } from '../src/index.js';

/**
 * The smallest interesting tree; its blob layout is worked out by hand in tinyBlobLayout.
 * `/ { x = <1>; c { e; }; }` with one reservation and boot CPU 3.
 */
export function tinyTree(): Fdt {
  return {
    root: fdtNode('', { x: fdtValue.u32(1) }, [fdtNode('c', { e: fdtValue.empty() })]),
    reservations: [{ address: 0x1000n, size: 0x2000n }],
    bootCpuId: 3,
  };
}

/**
 * Byte offsets inside `encodeFdt(tinyTree())`, from the spec: 40-byte header, one reservation
 * entry plus the zero terminator (2 × 16 bytes), then structure and strings blocks.
 */
export const tinyBlobLayout = {
  memReserve: 40,
  reservationTerminator: 56,
  struct: 72,
  rootBegin: 72,
  rootName: 76,
  xProp: 80,
  xLength: 84,
  xNameOffset: 88,
  xValue: 92,
  cBegin: 96,
  cName: 100,
  eProp: 104,
  eLength: 108,
  eNameOffset: 112,
  cEnd: 116,
  rootEnd: 120,
  end: 124,
  strings: 128, // "x\0e\0"
  structSize: 56,
  stringsSize: 4,
  totalSize: 132,
} as const;

/** A Kexec HandOver-like root: little-endian u64 physical addresses, as x86 KHO writes them. */
export function khoTree(): Fdt {
  return {
    root: fdtNode(
      '',
      {
        compatible: fdtValue.string('kho-v1'),
        'preserved-memory-map': fdtValue.u64(0x1_2345_6000n, { littleEndian: true }),
      },
      [
        fdtNode('memblock', { fdt: fdtValue.u64(0x7f00_0000n, { littleEndian: true }) }),
        fdtNode('LUO', {
          fdt: fdtValue.u64(0xffff_ffff_ffff_f000n, { littleEndian: true }),
          compatible: fdtValue.string('luo-v1'),
        }),
      ],
    ),
    reservations: [],
    bootCpuId: 0,
  };
}

/** Nested nodes, empty properties, string lists, shared name tails, reservations, a boot CPU. */
export function richTree(): Fdt {
  return {
    root: fdtNode(
      '',
      {
        '#address-cells': fdtValue.u32(2),
        '#size-cells': fdtValue.u32(2),
        compatible: fdtValue.stringList(['acme,board-v2', 'acme,board']),
        model: fdtValue.string('Acme Board ünïcode'),
        'linux,phandle': fdtValue.u32(1),
        phandle: fdtValue.u32(1),
      },
      [
        fdtNode('chosen', {
          bootargs: fdtValue.string('console=ttyS0 quiet'),
          'kexec,empty-list': fdtValue.stringList([]),
          'list-of-empties': fdtValue.stringList(['', '', 'x']),
        }),
        fdtNode('cpus', { '#address-cells': fdtValue.u32(1), '#size-cells': fdtValue.u32(0) }, [
          fdtNode('cpu@0', { reg: fdtValue.u32(0), device_type: fdtValue.string('cpu') }),
          fdtNode('cpu@1', { reg: fdtValue.u32(1), device_type: fdtValue.string('cpu') }),
        ]),
        fdtNode('memory@80000000', {
          device_type: fdtValue.string('memory'),
          reg: fdtValue.bytes(
            new Uint8Array([...fdtValue.u64(0x8000_0000n), ...fdtValue.u64(0x4000_0000n)]),
          ),
        }),
        fdtNode('empty-node'),
        fdtNode('soc', { ranges: fdtValue.empty(), 'dma-coherent': fdtValue.empty() }, [
          fdtNode('serial@10000000', {
            odd: new Uint8Array([1, 2, 3]),
            five: new Uint8Array([1, 2, 3, 4, 5]),
          }),
        ]),
      ],
    ),
    reservations: [
      { address: 0x1000n, size: 0x1000n },
      { address: 0xffff_ffff_ffff_0000n, size: 0xffffn },
      { address: 0n, size: 0x10n },
    ],
    bootCpuId: 1,
  };
}

/** A chain of `depth` nested nodes under the root (`/n/n/…`), so the deepest node is at `depth`. */
export function chainTree(depth: number): FdtNode {
  let node = fdtNode('n', { level: fdtValue.u32(depth) });
  for (let level = depth - 1; level >= 1; level--) {
    node = fdtNode('n', { level: fdtValue.u32(level) }, [node]);
  }
  return fdtNode('', {}, depth > 0 ? [node] : []);
}

/** Valid blobs of every sample, for mutation and fuzz tests. */
export function sampleBlobs(): { name: string; blob: Uint8Array }[] {
  return [
    { name: 'tiny', blob: encodeFdt(tinyTree()) },
    { name: 'kho', blob: encodeFdt(khoTree()) },
    { name: 'rich', blob: encodeFdt(richTree()) },
    { name: 'chain', blob: encodeFdt(chainTree(6)) },
    { name: 'empty root', blob: encodeFdt(fdtNode('')) },
  ];
}
