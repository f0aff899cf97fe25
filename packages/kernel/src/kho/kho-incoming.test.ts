import { describe, expect, it } from 'vitest';
import { encodeFdt, fdtNode, fdtValue, type FdtNode } from '@liveupdate/fdt';
import { PAGE_SIZE, PhysicalMemory, hex } from '@liveupdate/machine';
import { KhoHandoverError, readKhoHandover, type KhoIncoming } from './kho-incoming.js';
import { KHO_MAP_MAGIC, writeKhoMemoryMap, type PreservedFolio } from './kho-memory-map.js';

const MiB = 1024 * 1024;
const RAM = 16 * MiB;
const MAX_ORDER = 10;
const FIRST_USABLE_PFN = MiB / PAGE_SIZE;
const SCRATCH = { pfn: 256, frames: 1024 };
const FDT_PFN = 2000;
const MAP_PFN = 2010;
const le = { littleEndian: true };

interface HandoverOptions {
  compatible?: string;
  /** Folios besides the root FDT and the map page. */
  folios?: PreservedFolio[];
  /** Properties to set or (with `null`) leave out of the root node. */
  properties?: Record<string, Uint8Array | null>;
  children?: FdtNode[];
  /** The order the root FDT's folio is listed with, or `null` to leave it out of the map. */
  fdtOrder?: number | null;
  listMapPage?: boolean;
}

/** Write a handover by hand, the way a previous kernel would, and return the root FDT's address. */
function writeHandover(memory: PhysicalMemory, options: HandoverOptions = {}): number {
  const properties: Record<string, Uint8Array> = {};
  const all: Record<string, Uint8Array | null> = {
    compatible: fdtValue.string(options.compatible ?? 'kho-v1'),
    'preserved-memory-map': fdtValue.u64(BigInt(MAP_PFN * PAGE_SIZE), le),
    'scratch-phys': fdtValue.u64(BigInt(SCRATCH.pfn * PAGE_SIZE), le),
    'scratch-len': fdtValue.u64(BigInt(SCRATCH.frames * PAGE_SIZE), le),
    ...options.properties,
  };
  for (const [name, value] of Object.entries(all)) if (value) properties[name] = value;
  memory.write(FDT_PFN * PAGE_SIZE, encodeFdt(fdtNode('', properties, options.children ?? [])));
  const folios = [...(options.folios ?? [])];
  const fdtOrder = options.fdtOrder === undefined ? 0 : options.fdtOrder;
  if (fdtOrder !== null) folios.push({ pfn: FDT_PFN, order: fdtOrder });
  if (options.listMapPage ?? true) folios.push({ pfn: MAP_PFN, order: 0 });
  writeKhoMemoryMap(memory, [MAP_PFN], folios);
  return FDT_PFN * PAGE_SIZE;
}

/** A subtree node as kho_add_subtree() writes it, with `changes` applied (`null` removes). */
function subtreeNode(
  name: string,
  phys: number,
  size: number,
  changes: Record<string, Uint8Array | null> = {},
  children: FdtNode[] = [],
): FdtNode {
  const all: Record<string, Uint8Array | null> = {
    'preserved-data': fdtValue.u64(BigInt(phys), le),
    'blob-size': fdtValue.u64(BigInt(size), le),
    ...changes,
  };
  const properties: Record<string, Uint8Array> = {};
  for (const [key, value] of Object.entries(all)) if (value) properties[key] = value;
  return fdtNode(name, properties, children);
}

/** `n` valid subtrees with blobs in the root FDT's own folio: they make the root FDT large. */
function paddingSubtrees(n: number): FdtNode[] {
  return Array.from({ length: n }, (_, i) => subtreeNode(`pad${i}`, FDT_PFN * PAGE_SIZE, 16));
}

function handoverError(memory: PhysicalMemory, fdtPhys: number): KhoHandoverError {
  try {
    readKhoHandover(memory, fdtPhys, MAX_ORDER, FIRST_USABLE_PFN);
  } catch (error) {
    if (error instanceof KhoHandoverError) return error;
    throw error;
  }
  throw new Error('expected a KhoHandoverError');
}

describe('readKhoHandover', () => {
  it("reads a valid handover: folios sorted by pfn, the handover's own folios, scratch and subtrees", () => {
    const memory = PhysicalMemory.allocate(RAM);
    const subtree = fdtNode('luo', {
      'preserved-data': fdtValue.u64(BigInt(1300 * PAGE_SIZE + 8), le),
      'blob-size': fdtValue.u64(64n, le),
    });
    const fdtPhys = writeHandover(memory, {
      folios: [
        { pfn: 3072, order: 10 },
        { pfn: 1300, order: 2 },
        { pfn: 2048, order: 3 },
      ],
      children: [subtree],
    });
    const incoming = readKhoHandover(memory, fdtPhys, MAX_ORDER, FIRST_USABLE_PFN) as KhoIncoming;
    expect(incoming.fdtPhys).toBe(fdtPhys);
    expect(incoming.scratch).toEqual(SCRATCH);
    expect(incoming.folios).toEqual([
      { pfn: 1300, order: 2 },
      { pfn: FDT_PFN, order: 0 },
      { pfn: MAP_PFN, order: 0 },
      { pfn: 2048, order: 3 },
      { pfn: 3072, order: 10 },
    ]);
    expect(incoming.handoverFolios).toEqual([
      { pfn: FDT_PFN, order: 0 },
      { pfn: MAP_PFN, order: 0 },
    ]);
    expect([...incoming.subtrees.keys()]).toEqual(['luo']);
    expect(incoming.subtrees.get('luo')).toEqual({ phys: 1300 * PAGE_SIZE + 8, size: 64 });
  });

  it('returns the compatible string, without looking further, for another KHO ABI', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, {
      compatible: 'kho-v9',
      properties: { 'preserved-memory-map': null, 'scratch-phys': null, 'scratch-len': null },
      listMapPage: false,
    });
    memory.writeU32(MAP_PFN * PAGE_SIZE, 0);
    expect(readKhoHandover(memory, fdtPhys, MAX_ORDER, FIRST_USABLE_PFN)).toEqual({
      incompatible: 'kho-v9',
    });
  });

  it('rejects preserved ranges that overlap each other', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, {
      folios: [
        { pfn: 2048, order: 3 },
        { pfn: 2054, order: 1 },
      ],
    });
    expect(handoverError(memory, fdtPhys).message).toMatch(
      /overlap: 0x800000\+0x8000 and 0x806000\+0x2000/,
    );
  });

  it('rejects the same frame listed twice with different orders', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, {
      folios: [
        { pfn: 2048, order: 0 },
        { pfn: 2048, order: 2 },
      ],
    });
    expect(handoverError(memory, fdtPhys).message).toContain('overlap');
  });

  it('rejects a preserved range inside scratch or reaching into it', () => {
    const memory = PhysicalMemory.allocate(RAM);
    expect(
      handoverError(memory, writeHandover(memory, { folios: [{ pfn: 300, order: 0 }] })).message,
    ).toContain('overlaps the scratch area');
    // 1024 + 512 frames covers the end of scratch at 1280.
    expect(
      handoverError(memory, writeHandover(memory, { folios: [{ pfn: 1024, order: 9 }] })).message,
    ).toContain('overlaps the scratch area');
    expect(
      handoverError(memory, writeHandover(memory, { folios: [{ pfn: 1279, order: 0 }] })).message,
    ).toContain('overlaps the scratch area');
  });

  it('rejects a preserved range in the firmware area', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, { folios: [{ pfn: FIRST_USABLE_PFN - 1, order: 0 }] });
    expect(handoverError(memory, fdtPhys).message).toContain('firmware');
  });

  it.each([
    ['not page aligned', FDT_PFN * PAGE_SIZE + 8],
    ['at the end of RAM', RAM],
    ['past the end of RAM', RAM + PAGE_SIZE],
    ['negative', -PAGE_SIZE],
    ['not a number', Number.NaN],
    ['beyond 2^53', 2 ** 60],
  ])('rejects a root FDT address that is %s', (_what, fdtPhys) => {
    const memory = PhysicalMemory.allocate(RAM);
    writeHandover(memory);
    expect(handoverError(memory, fdtPhys).message).toContain('root FDT address');
  });

  it('rejects a root FDT address that holds no FDT', () => {
    const memory = PhysicalMemory.allocate(RAM);
    writeHandover(memory);
    expect(handoverError(memory, 3000 * PAGE_SIZE).message).toContain('is corrupt');
  });

  it('rejects a root FDT whose size runs past the limit', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory);
    // totalsize is the big-endian u32 at offset 4 of the FDT header.
    new DataView(memory.buffer).setUint32(fdtPhys + 4, 2 * MiB);
    expect(handoverError(memory, fdtPhys).message).toContain('totalsize');
  });

  it('rejects a root FDT larger than the folio it is preserved in', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, { children: paddingSubtrees(100) });
    expect(handoverError(memory, fdtPhys).message).toContain('not in preserved memory');
  });

  it('accepts a root FDT larger than a page when its folio is large enough', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, { children: paddingSubtrees(100), fdtOrder: 1 });
    const incoming = readKhoHandover(memory, fdtPhys, MAX_ORDER, FIRST_USABLE_PFN) as KhoIncoming;
    expect(incoming.handoverFolios[0]).toEqual({ pfn: FDT_PFN, order: 1 });
  });

  it('rejects a root FDT missing from the preserved memory map', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, { fdtOrder: null });
    expect(handoverError(memory, fdtPhys).message).toContain(
      `root FDT at ${hex(FDT_PFN * PAGE_SIZE)} is not in preserved memory`,
    );
  });

  it('rejects a memory map page missing from the preserved memory map', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, { listMapPage: false });
    expect(handoverError(memory, fdtPhys).message).toContain(
      `memory map page ${hex(MAP_PFN * PAGE_SIZE)} is not in preserved memory`,
    );
  });

  it.each([
    ['missing', null],
    ['of the wrong size', fdtValue.u32(0)],
  ])('rejects a preserved-memory-map property that is %s', (_what, value) => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, { properties: { 'preserved-memory-map': value } });
    expect(handoverError(memory, fdtPhys).message).toContain('preserved-memory-map');
  });

  it('rejects a preserved-memory-map address outside RAM', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, {
      properties: { 'preserved-memory-map': fdtValue.u64(BigInt(RAM), le) },
    });
    expect(handoverError(memory, fdtPhys).message).toContain('outside RAM');
  });

  it('reports a corrupt memory map as a handover error naming the page', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory);
    memory.writeU32(MAP_PFN * PAGE_SIZE, KHO_MAP_MAGIC ^ 1);
    const error = handoverError(memory, fdtPhys);
    expect(error.name).toBe('KhoHandoverError');
    expect(error.message).toContain(`memory map page ${hex(MAP_PFN * PAGE_SIZE)}: bad magic`);
  });

  it.each([
    ['in the firmware area', 0n, BigInt(4 * MiB)],
    ['empty', BigInt(MiB), 0n],
    ['past the end of RAM', BigInt(12 * MiB), BigInt(8 * MiB)],
    ['not page aligned', BigInt(MiB + 8), BigInt(4 * MiB)],
    ['of a length that is not whole pages', BigInt(MiB), BigInt(4 * MiB + 8)],
  ])('rejects a scratch area %s', (_what, phys, len) => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, {
      properties: { 'scratch-phys': fdtValue.u64(phys, le), 'scratch-len': fdtValue.u64(len, le) },
    });
    expect(handoverError(memory, fdtPhys).message).toContain('scratch area');
  });

  it('rejects a root property KHO does not write, naming it', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, { properties: { 'scratch-phis': fdtValue.u64(0n, le) } });
    expect(handoverError(memory, fdtPhys).message).toBe(
      'root FDT: unknown property "scratch-phis"',
    );
  });

  const BLOB = 1300 * PAGE_SIZE;
  it.each<[string, FdtNode, string]>([
    [
      'a name kho_add_subtree() refuses',
      subtreeNode('x'.repeat(32), BLOB, 16),
      'not a name kho_add_subtree() accepts',
    ],
    ['a unit address', subtreeNode('LUO@1', BLOB, 16), 'not a name kho_add_subtree() accepts'],
    ['a child node', subtreeNode('LUO', BLOB, 16, {}, [fdtNode('x', {})]), 'has child nodes'],
    [
      'an unknown property',
      subtreeNode('LUO', BLOB, 16, { 'blob-sise': fdtValue.u64(1n, le) }),
      'unknown property "blob-sise"',
    ],
    ['no blob-size', subtreeNode('LUO', BLOB, 16, { 'blob-size': null }), 'blob-size'],
    [
      'a preserved-data of 4 bytes',
      subtreeNode('LUO', BLOB, 16, { 'preserved-data': fdtValue.u32(BLOB) }),
      'preserved-data',
    ],
    [
      'an empty blob',
      subtreeNode('LUO', BLOB, 0),
      `blob ${hex(BLOB)}+0 is empty, at 0 or outside RAM`,
    ],
    ['a blob at 0', subtreeNode('LUO', 0, 16), 'blob 0x0+16 is empty, at 0 or outside RAM'],
    [
      'a blob past the end of RAM',
      subtreeNode('LUO', RAM - 8, 16),
      'is empty, at 0 or outside RAM',
    ],
    [
      'a blob in free memory',
      subtreeNode('LUO', 1400 * PAGE_SIZE, 16),
      `blob ${hex(1400 * PAGE_SIZE)}+16 is not in preserved memory`,
    ],
    [
      'a blob running past its folio',
      subtreeNode('LUO', BLOB + 4 * PAGE_SIZE - 8, 16),
      'is not in preserved memory',
    ],
  ])('rejects a subtree with %s, naming it', (_what, node, problem) => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, {
      folios: [{ pfn: 1300, order: 2 }],
      children: [node],
    });
    const message = handoverError(memory, fdtPhys).message;
    expect(message).toContain(`subtree ${JSON.stringify(node.name)}`);
    expect(message).toContain(problem);
  });

  it('accepts a blob spanning two adjacent preserved folios', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, {
      folios: [
        { pfn: 1300, order: 2 },
        { pfn: 1304, order: 0 },
      ],
      children: [subtreeNode('LUO', BLOB + 4 * PAGE_SIZE - 8, 16)],
    });
    const incoming = readKhoHandover(memory, fdtPhys, MAX_ORDER, FIRST_USABLE_PFN) as KhoIncoming;
    expect(incoming.subtrees.get('LUO')).toEqual({ phys: BLOB + 4 * PAGE_SIZE - 8, size: 16 });
  });
});
