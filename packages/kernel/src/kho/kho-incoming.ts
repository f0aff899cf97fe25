import {
  FdtError,
  decodeFdt,
  fdtValueOffset,
  readFdtHeader,
  readString,
  readU32,
  readU64,
  type FdtNode,
} from '@liveupdate/fdt';
import { PAGE_SIZE, hex, type PhysicalMemory } from '@liveupdate/machine';
import { crc32c } from '../crc32c.js';
import {
  KHO_FDT_COMPATIBLE,
  KHO_FDT_COMPATIBLE_V1,
  KHO_FDT_MAX_SIZE,
  KHO_PROP_BLOB_CRC,
  KHO_PROP_BLOB_SIZE,
  KHO_PROP_FDT_CRC,
  KHO_PROP_MEMORY_MAP,
  KHO_PROP_MEMORY_MAP_CRC,
  KHO_PROP_PRESERVED_DATA,
  KHO_PROP_SCRATCH_LEN,
  KHO_PROP_SCRATCH_PHYS,
  KHO_SUBTREE_NAME,
} from './kho-abi.js';
import type { KhoSubtree } from './kexec-handover.js';
import { khoFdtCrc } from './kho-fdt-crc.js';
import {
  KhoMapError,
  readKhoMemoryMap,
  sortFoliosByPfn,
  type PreservedFolio,
} from './kho-memory-map.js';

/** A range of frames. */
export interface FrameRange {
  readonly pfn: number;
  readonly frames: number;
}

/** What the previous kernel handed over, validated. */
export interface KhoIncoming {
  /** The root's ABI: `kho-v2` (checksummed, all checksums matched) or `kho-v1` (none). */
  readonly compatible: typeof KHO_FDT_COMPATIBLE | typeof KHO_FDT_COMPATIBLE_V1;
  readonly fdtPhys: number;
  readonly scratch: FrameRange;
  /** Every preserved folio, sorted by pfn, the handover's own frames included. */
  readonly folios: readonly PreservedFolio[];
  /** The folios holding the root FDT and the memory map: freed once the handover is parsed. */
  readonly handoverFolios: readonly PreservedFolio[];
  /** The subtrees of the root FDT by name: each blob in RAM and in preserved memory. */
  readonly subtrees: ReadonlyMap<string, KhoSubtree>;
}

/** The handover is corrupt; the message names what is wrong and where. The kernel panics. */
export class KhoHandoverError extends Error {
  override readonly name = 'KhoHandoverError';
}

/** The root FDT is valid but of another KHO ABI: the kernel ignores the handover, as Linux does. */
export interface KhoIncompatible {
  readonly incompatible: string;
}

/**
 * Read and validate the handover at `fdtPhys`: the root FDT, the memory map, the scratch area, and
 * that no two preserved folios overlap each other, scratch or the firmware area below
 * `firstUsablePfn`. A `kho-v2` root is checksummed: its `fdt-crc` is checked right after the blob
 * decodes, before any property is read; the map's `preserved-memory-map-crc` after its chain is
 * walked, before any entry is read; each subtree's `blob-crc` once its blob is known to be
 * preserved memory. A `kho-v1` root has no checksums (the caller warns). Returns only when all of
 * it is valid; throws {@link KhoHandoverError} otherwise, so nothing is ever half-used.
 */
export function readKhoHandover(
  memory: PhysicalMemory,
  fdtPhys: number,
  maxOrder: number,
  firstUsablePfn: number,
): KhoIncoming | KhoIncompatible {
  if (
    !Number.isSafeInteger(fdtPhys) ||
    fdtPhys % PAGE_SIZE !== 0 ||
    !memory.contains(fdtPhys, 40)
  ) {
    throw new KhoHandoverError(
      `root FDT address ${hex(fdtPhys)} is outside RAM or not page aligned`,
    );
  }
  let root: FdtNode;
  let fdtSize: number;
  let fdtBytes: Uint8Array;
  try {
    const header = readFdtHeader(memory.read(fdtPhys, 40));
    if (header.totalSize > KHO_FDT_MAX_SIZE || !memory.contains(fdtPhys, header.totalSize)) {
      throw new KhoHandoverError(
        `root FDT at ${hex(fdtPhys)}: totalsize ${header.totalSize} runs past the end of RAM or the ${KHO_FDT_MAX_SIZE}-byte limit`,
      );
    }
    fdtSize = header.totalSize;
    fdtBytes = memory.read(fdtPhys, fdtSize);
    root = decodeFdt(fdtBytes).root;
  } catch (error) {
    if (error instanceof FdtError) {
      throw new KhoHandoverError(`root FDT at ${hex(fdtPhys)} is corrupt: ${error.message}`);
    }
    throw error;
  }
  const property = <T>(read: () => T): T => {
    try {
      return read();
    } catch (error) {
      if (error instanceof FdtError) throw new KhoHandoverError(`root FDT: ${error.message}`);
      throw error;
    }
  };
  const compatible = property(() => readString(root, 'compatible'));
  if (compatible !== KHO_FDT_COMPATIBLE && compatible !== KHO_FDT_COMPATIBLE_V1) {
    return { incompatible: compatible };
  }
  const checksummed = compatible === KHO_FDT_COMPATIBLE;
  if (checksummed) {
    const expected = property(() => readU32(root, KHO_PROP_FDT_CRC));
    const value = root.properties.find((p) => p.name === KHO_PROP_FDT_CRC)!;
    const crc = khoFdtCrc(fdtBytes, fdtValueOffset(value)!);
    if (crc !== expected) {
      throw new KhoHandoverError(
        `root FDT ${KHO_PROP_FDT_CRC} ${hex(expected)} does not match its blob (${hex(crc)})`,
      );
    }
  }

  const le = { littleEndian: true };
  const mapPhys = property(() => readU64(root, KHO_PROP_MEMORY_MAP, le));
  const mapCrc = checksummed ? property(() => readU32(root, KHO_PROP_MEMORY_MAP_CRC)) : null;
  const scratchPhys = property(() => readU64(root, KHO_PROP_SCRATCH_PHYS, le));
  const scratchLen = property(() => readU64(root, KHO_PROP_SCRATCH_LEN, le));
  if (
    scratchPhys % BigInt(PAGE_SIZE) !== 0n ||
    scratchLen % BigInt(PAGE_SIZE) !== 0n ||
    scratchLen === 0n ||
    scratchPhys + scratchLen > BigInt(memory.size) ||
    scratchPhys < BigInt(firstUsablePfn * PAGE_SIZE)
  ) {
    throw new KhoHandoverError(
      `scratch area ${hex(scratchPhys)}+${hex(scratchLen)} is not usable RAM`,
    );
  }
  const scratch = { pfn: Number(scratchPhys) / PAGE_SIZE, frames: Number(scratchLen) / PAGE_SIZE };
  if (mapPhys >= BigInt(memory.size)) {
    throw new KhoHandoverError(`preserved-memory-map ${hex(mapPhys)} is outside RAM`);
  }

  let map: { folios: PreservedFolio[]; pages: number[] };
  try {
    map = readKhoMemoryMap(memory, Number(mapPhys), maxOrder, mapCrc);
  } catch (error) {
    if (error instanceof KhoMapError) throw new KhoHandoverError(error.message);
    throw error;
  }
  const folios = sortFoliosByPfn(map.folios);
  let previous: PreservedFolio | undefined;
  for (let i = 0; i < folios.length; i++) {
    const folio = folios[i]!;
    // 1 << order, not 2 ** order: once per folio in cold code, where ** calls Math.pow; orders
    // here are at most maxOrder (readKhoMemoryMap refused any other).
    const end = folio.pfn + (1 << folio.order);
    if (previous && previous.pfn + (1 << previous.order) > folio.pfn) {
      throw new KhoHandoverError(
        `preserved ranges overlap: ${describe(previous)} and ${describe(folio)}`,
      );
    }
    if (folio.pfn < scratch.pfn + scratch.frames && end > scratch.pfn) {
      throw new KhoHandoverError(`preserved range ${describe(folio)} overlaps the scratch area`);
    }
    if (folio.pfn < firstUsablePfn) {
      throw new KhoHandoverError(`preserved range ${describe(folio)} lies in the firmware area`);
    }
    previous = folio;
  }

  const startingAt = (pfn: number): PreservedFolio | undefined => {
    const folio = folios[lastFolioAtOrBefore(folios, pfn)];
    return folio?.pfn === pfn ? folio : undefined;
  };
  const fdtFolio = startingAt(fdtPhys / PAGE_SIZE);
  if (!fdtFolio || PAGE_SIZE * 2 ** fdtFolio.order < fdtSize) {
    throw new KhoHandoverError(`root FDT at ${hex(fdtPhys)} is not in preserved memory`);
  }
  const handoverFolios = [fdtFolio];
  for (const pfn of map.pages) {
    const folio = startingAt(pfn);
    if (!folio || folio.order !== 0) {
      throw new KhoHandoverError(
        `memory map page ${hex(pfn * PAGE_SIZE)} is not in preserved memory`,
      );
    }
    handoverFolios.push(folio);
  }
  const subtrees = readSubtrees(root, memory, folios, checksummed);
  return { compatible, fdtPhys, scratch, folios, handoverFolios, subtrees };
}

const ROOT_PROPERTIES_V1 = [
  'compatible',
  KHO_PROP_MEMORY_MAP,
  KHO_PROP_SCRATCH_PHYS,
  KHO_PROP_SCRATCH_LEN,
];
const SUBTREE_PROPERTIES_V1 = [KHO_PROP_PRESERVED_DATA, KHO_PROP_BLOB_SIZE];
/** The properties each ABI writes, by whether it is checksummed (`kho-v2`). */
const ROOT_PROPERTIES = {
  v1: new Set(ROOT_PROPERTIES_V1),
  v2: new Set([...ROOT_PROPERTIES_V1, KHO_PROP_MEMORY_MAP_CRC, KHO_PROP_FDT_CRC]),
};
const SUBTREE_PROPERTIES = {
  v1: new Set(SUBTREE_PROPERTIES_V1),
  v2: new Set([...SUBTREE_PROPERTIES_V1, KHO_PROP_BLOB_CRC]),
};

/**
 * The root's subtree nodes, each as `kho_add_subtree()` writes it: a name it accepts, exactly
 * `preserved-data` and `blob-size` (and `blob-crc` in `kho-v2`, which must match), no children, a
 * non-empty blob in RAM whose every frame is preserved. Also refuses a root property KHO does not
 * write. A damaged name that is still a
 * valid one cannot be seen here; the kernel reports subtrees nobody retrieves
 * (`reportUnclaimedSubtrees`).
 */
function readSubtrees(
  root: FdtNode,
  memory: PhysicalMemory,
  folios: readonly PreservedFolio[],
  checksummed: boolean,
): Map<string, KhoSubtree> {
  const version = checksummed ? 'v2' : 'v1';
  for (const { name } of root.properties) {
    if (!ROOT_PROPERTIES[version].has(name)) {
      throw new KhoHandoverError(`root FDT: unknown property ${JSON.stringify(name)}`);
    }
  }
  const le = { littleEndian: true };
  const subtrees = new Map<string, KhoSubtree>();
  for (const node of root.children) {
    const where = `root FDT: subtree ${JSON.stringify(node.name)}`;
    if (!KHO_SUBTREE_NAME.test(node.name)) {
      throw new KhoHandoverError(`${where}: not a name kho_add_subtree() accepts`);
    }
    if (subtrees.has(node.name)) throw new KhoHandoverError(`${where}: appears twice`);
    if (node.children.length > 0) throw new KhoHandoverError(`${where}: has child nodes`);
    for (const { name } of node.properties) {
      if (!SUBTREE_PROPERTIES[version].has(name)) {
        throw new KhoHandoverError(`${where}: unknown property ${JSON.stringify(name)}`);
      }
    }
    const read = <T>(get: () => T): T => {
      try {
        return get();
      } catch (error) {
        if (error instanceof FdtError) throw new KhoHandoverError(`${where}: ${error.message}`);
        throw error;
      }
    };
    const u64 = (name: string): bigint => read(() => readU64(node, name, le));
    const phys = u64(KHO_PROP_PRESERVED_DATA);
    const size = u64(KHO_PROP_BLOB_SIZE);
    const blob = `${where}: blob ${hex(phys)}+${size}`;
    if (size === 0n || phys === 0n || phys + size > BigInt(memory.size)) {
      throw new KhoHandoverError(`${blob} is empty, at 0 or outside RAM`);
    }
    const subtree = { phys: Number(phys), size: Number(size) };
    if (!isPreserved(subtree, folios)) {
      throw new KhoHandoverError(`${blob} is not in preserved memory`);
    }
    if (checksummed) {
      const expected = read(() => readU32(node, KHO_PROP_BLOB_CRC));
      const crc = crc32c(memory.read(subtree.phys, subtree.size));
      if (crc !== expected) {
        throw new KhoHandoverError(
          `subtree ${JSON.stringify(node.name)} ${KHO_PROP_BLOB_CRC} ${hex(expected)} does not match its blob (${hex(crc)})`,
        );
      }
    }
    subtrees.set(node.name, subtree);
  }
  return subtrees;
}

/** Whether every frame of `range` lies in a folio of `folios` (sorted by pfn, disjoint). */
function isPreserved(range: KhoSubtree, folios: readonly PreservedFolio[]): boolean {
  let pfn = Math.floor(range.phys / PAGE_SIZE);
  const end = Math.ceil((range.phys + range.size) / PAGE_SIZE);
  let index = lastFolioAtOrBefore(folios, pfn);
  for (; index >= 0 && index < folios.length && pfn < end; index++) {
    const folio = folios[index]!;
    if (folio.pfn > pfn || folio.pfn + 2 ** folio.order <= pfn) return false;
    pfn = folio.pfn + 2 ** folio.order;
  }
  return pfn >= end;
}

/** The index of the last folio of `folios` (sorted by pfn) starting at or before `pfn`, or -1. */
function lastFolioAtOrBefore(folios: readonly PreservedFolio[], pfn: number): number {
  let low = 0;
  let high = folios.length - 1;
  let index = -1;
  while (low <= high) {
    const mid = (low + high) >> 1;
    if (folios[mid]!.pfn <= pfn) {
      index = mid;
      low = mid + 1;
    } else {
      high = mid - 1;
    }
  }
  return index;
}

function describe(folio: PreservedFolio): string {
  return `${hex(folio.pfn * PAGE_SIZE)}+${hex(PAGE_SIZE * 2 ** folio.order)}`;
}
