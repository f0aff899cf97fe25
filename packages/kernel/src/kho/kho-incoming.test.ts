import { describe, expect, it } from 'vitest';
import {
  decodeFdt,
  encodeFdt,
  fdtNode,
  fdtValue,
  fdtValueOffset,
  readU32,
  type FdtNode,
} from '@liveupdate/fdt';
import { PAGE_SIZE, PhysicalMemory, hex } from '@liveupdate/machine';
import { crc32c } from '../crc32c.js';
import { KhoHandoverError, readKhoHandover, type KhoIncoming } from './kho-incoming.js';
import { KHO_MAP_MAGIC, writeKhoMemoryMap, type PreservedFolio } from './kho-memory-map.js';
import { sealKhoHandover } from './seal-kho-handover.js';

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

/**
 * Write a handover by hand, the way a previous kernel would, and return the root FDT's address.
 * A `kho-v2` one (the default) gets its checksum properties, sealed last by `sealKhoHandover`;
 * its subtrees need `blob-crc` (as {@link subtreeNode} writes them).
 */
function writeHandover(memory: PhysicalMemory, options: HandoverOptions = {}): number {
  const properties: Record<string, Uint8Array> = {};
  const compatible = options.compatible ?? 'kho-v2';
  const v2 = compatible === 'kho-v2';
  const all: Record<string, Uint8Array | null> = {
    compatible: fdtValue.string(compatible),
    'preserved-memory-map': fdtValue.u64(BigInt(MAP_PFN * PAGE_SIZE), le),
    ...(v2 && { 'preserved-memory-map-crc': fdtValue.u32(0) }),
    'scratch-phys': fdtValue.u64(BigInt(SCRATCH.pfn * PAGE_SIZE), le),
    'scratch-len': fdtValue.u64(BigInt(SCRATCH.frames * PAGE_SIZE), le),
    ...(v2 && { 'fdt-crc': fdtValue.u32(0) }),
    ...options.properties,
  };
  for (const [name, value] of Object.entries(all)) if (value) properties[name] = value;
  memory.write(FDT_PFN * PAGE_SIZE, encodeFdt(fdtNode('', properties, options.children ?? [])));
  const folios = [...(options.folios ?? [])];
  const fdtOrder = options.fdtOrder === undefined ? 0 : options.fdtOrder;
  if (fdtOrder !== null) folios.push({ pfn: FDT_PFN, order: fdtOrder });
  if (options.listMapPage ?? true) folios.push({ pfn: MAP_PFN, order: 0 });
  writeKhoMemoryMap(memory, [MAP_PFN], folios);
  sealKhoHandover(memory, FDT_PFN * PAGE_SIZE);
  return FDT_PFN * PAGE_SIZE;
}

/**
 * A subtree node as kho_add_subtree() writes it in `kho-v2` (its `blob-crc` left for the seal),
 * with `changes` applied (`null` removes).
 */
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
    'blob-crc': fdtValue.u32(0),
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
    const subtree = subtreeNode('luo', 1300 * PAGE_SIZE + 8, 64);
    const fdtPhys = writeHandover(memory, {
      folios: [
        { pfn: 3072, order: 10 },
        { pfn: 1300, order: 2 },
        { pfn: 2048, order: 3 },
      ],
      children: [subtree],
    });
    const incoming = readKhoHandover(memory, fdtPhys, MAX_ORDER, FIRST_USABLE_PFN) as KhoIncoming;
    expect(incoming.compatible).toBe('kho-v2');
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

describe('readKhoHandover and the kho-v2 checksums', () => {
  const BLOB = 1300 * PAGE_SIZE;
  /** A sealed kho-v2 handover with one subtree "LUO" of 64 bytes at BLOB. */
  function sealed(memory: PhysicalMemory): number {
    memory.write(
      BLOB,
      Uint8Array.from({ length: 64 }, (_, i) => i + 1),
    );
    return writeHandover(memory, {
      folios: [{ pfn: 1300, order: 0 }],
      children: [subtreeNode('LUO', BLOB, 64)],
    });
  }

  /** The u32 cell value of a property of the root FDT at `fdtPhys` (or of its child `node`). */
  function cell(memory: PhysicalMemory, fdtPhys: number, name: string, node?: string): number {
    const size = new DataView(memory.buffer).getUint32(fdtPhys + 4);
    const root = decodeFdt(memory.read(fdtPhys, size)).root;
    const owner = node === undefined ? root : root.children.find((c) => c.name === node)!;
    return readU32(owner, name);
  }

  it('stores the CRC32C of the blob, of the map page and of the root FDT with fdt-crc zero', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = sealed(memory);
    expect(cell(memory, fdtPhys, 'blob-crc', 'LUO')).toBe(crc32c(memory.read(BLOB, 64)));
    // One map page with 3 entries: its 16-byte header and 24 bytes of entries.
    expect(cell(memory, fdtPhys, 'preserved-memory-map-crc')).toBe(
      crc32c(memory.read(MAP_PFN * PAGE_SIZE, 16 + 3 * 8)),
    );
    const size = new DataView(memory.buffer).getUint32(fdtPhys + 4);
    const blob = memory.read(fdtPhys, size);
    const stored = cell(memory, fdtPhys, 'fdt-crc');
    const property = decodeFdt(blob).root.properties.find((p) => p.name === 'fdt-crc')!;
    const at = fdtValueOffset(property)!;
    blob.fill(0, at, at + 4);
    expect(stored).toBe(crc32c(blob));
    expect(readKhoHandover(memory, fdtPhys, MAX_ORDER, FIRST_USABLE_PFN)).toMatchObject({
      compatible: 'kho-v2',
    });
  });

  it('panics naming the subtree when one byte of its blob changed', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = sealed(memory);
    const stored = cell(memory, fdtPhys, 'blob-crc', 'LUO');
    memory.write(BLOB + 10, Uint8Array.of(0xee));
    expect(handoverError(memory, fdtPhys).message).toBe(
      `subtree "LUO" blob-crc ${hex(stored)} does not match its blob (${hex(crc32c(memory.read(BLOB, 64)))})`,
    );
  });

  it('panics naming the map when an entry changed into another valid, non-overlapping one', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = sealed(memory);
    // The first entry (pfn 1300, the blob's folio, order 0) moves to pfn 1400: valid, free.
    expect(memory.readU64(MAP_PFN * PAGE_SIZE + 16)).toBe(BigInt(BLOB));
    memory.writeU64(MAP_PFN * PAGE_SIZE + 16, BigInt(1400 * PAGE_SIZE));
    expect(handoverError(memory, fdtPhys).message).toMatch(
      /^preserved-memory-map-crc 0x[0-9a-f]+ does not match the memory map \(0x[0-9a-f]+\)$/,
    );
  });

  it('panics naming the root FDT when a property value changed into another valid one', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = sealed(memory);
    // blob-size 64 -> 32: still a blob in preserved memory; only the checksum can tell.
    const size = new DataView(memory.buffer).getUint32(fdtPhys + 4);
    const luo = decodeFdt(memory.read(fdtPhys, size)).root.children[0]!;
    const blobSize = luo.properties.find((p) => p.name === 'blob-size')!;
    expect(blobSize.value).toEqual(fdtValue.u64(64n, le));
    memory.write(fdtPhys + fdtValueOffset(blobSize)!, Uint8Array.of(32));
    const stored = cell(memory, fdtPhys, 'fdt-crc');
    expect(handoverError(memory, fdtPhys).message).toMatch(
      new RegExp(`^root FDT fdt-crc ${hex(stored)} does not match its blob \\(0x[0-9a-f]+\\)$`),
    );
    // Resealed, the change is a valid handover again: the checksum was what caught it.
    sealKhoHandover(memory, fdtPhys);
    const incoming = readKhoHandover(memory, fdtPhys, MAX_ORDER, FIRST_USABLE_PFN) as KhoIncoming;
    expect(incoming.subtrees.get('LUO')).toEqual({ phys: BLOB, size: 32 });
  });

  it.each<[string, HandoverOptions]>([
    ['fdt-crc', { properties: { 'fdt-crc': null } }],
    ['preserved-memory-map-crc', { properties: { 'preserved-memory-map-crc': null } }],
    ['blob-crc', { children: [subtreeNode('LUO', BLOB, 64, { 'blob-crc': null })] }],
  ])('treats a kho-v2 root without %s as damaged', (name, options) => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, { folios: [{ pfn: 1300, order: 0 }], ...options });
    const message = handoverError(memory, fdtPhys).message;
    expect(message).toContain(name);
    expect(message).toContain(`has no property "${name}"`);
  });

  it('reads a kho-v1 root, which has no checksums, and says so', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const fdtPhys = writeHandover(memory, {
      compatible: 'kho-v1',
      folios: [{ pfn: 1300, order: 0 }],
      children: [subtreeNode('LUO', BLOB, 64, { 'blob-crc': null })],
    });
    // Nothing can tell a value-only change in kho-v1.
    memory.write(BLOB + 10, Uint8Array.of(0xee));
    const incoming = readKhoHandover(memory, fdtPhys, MAX_ORDER, FIRST_USABLE_PFN) as KhoIncoming;
    expect(incoming.compatible).toBe('kho-v1');
    expect(incoming.subtrees.get('LUO')).toEqual({ phys: BLOB, size: 64 });
  });

  it('refuses checksum properties in a kho-v1 root: it is not what a kho-v1 writer produces', () => {
    const memory = PhysicalMemory.allocate(RAM);
    const root = writeHandover(memory, {
      compatible: 'kho-v1',
      properties: { 'fdt-crc': fdtValue.u32(0) },
    });
    expect(handoverError(memory, root).message).toBe('root FDT: unknown property "fdt-crc"');
    const subtree = writeHandover(memory, {
      compatible: 'kho-v1',
      folios: [{ pfn: 1300, order: 0 }],
      children: [subtreeNode('LUO', BLOB, 64)],
    });
    expect(handoverError(memory, subtree).message).toBe(
      'root FDT: subtree "LUO": unknown property "blob-crc"',
    );
  });
});
