import {
  FDT_HEADER_SIZE,
  FdtError,
  decodeFdt,
  fdtValue,
  fdtValueOffset,
  readFdtHeader,
  readString,
  readU64,
  type FdtNode,
} from '@liveupdate/fdt';
import type { PhysicalMemory } from '@liveupdate/machine';
import { crc32c } from '../crc32c.js';
import {
  KHO_FDT_COMPATIBLE,
  KHO_PROP_BLOB_CRC,
  KHO_PROP_BLOB_SIZE,
  KHO_PROP_FDT_CRC,
  KHO_PROP_MEMORY_MAP,
  KHO_PROP_MEMORY_MAP_CRC,
  KHO_PROP_PRESERVED_DATA,
} from './kho-abi.js';
import { khoFdtCrc } from './kho-fdt-crc.js';
import { KhoMapError, khoMapCrc, walkKhoMapChain } from './kho-memory-map.js';

/**
 * Recompute, in place, every checksum of the `kho-v2` handover at `khoFdtPhys` after a test or a
 * tool edited its bytes on purpose: each subtree's `blob-crc` (over its `blob-size` bytes at
 * `preserved-data`), the root's `preserved-memory-map-crc`, and last the root's `fdt-crc`. Then
 * what the next kernel does with the edit is decided by its other checks (KHO's structural ones,
 * or the subsystem's own), not by a checksum.
 *
 * Only the 4 value bytes of each checksum property are written: the rest of the root FDT stays as
 * it is, damage included. A checksum property that is missing or not 4 bytes long is left so, and
 * so is a checksum whose data cannot be read (a blob outside RAM, a memory map chain that is
 * broken): the next kernel refuses those before it looks at the checksum. A `kho-v1` handover has
 * no checksums and is left as it is. The root FDT itself must still decode.
 */
export function sealKhoHandover(memory: PhysicalMemory, khoFdtPhys: number): void {
  const { totalSize } = readFdtHeader(memory.read(khoFdtPhys, FDT_HEADER_SIZE));
  const root = decodeFdt(memory.read(khoFdtPhys, totalSize)).root;
  if (readString(root, 'compatible') !== KHO_FDT_COMPATIBLE) return;
  const le = { littleEndian: true };
  /** Write `crc(offset)` over the value of `node`'s 4-byte property `name`, found at `offset`. */
  const setCrc = (node: FdtNode, name: string, crc: (offset: number) => number | null): void => {
    const property = node.properties.find((p) => p.name === name);
    if (property?.value.length !== 4) return;
    const offset = fdtValueOffset(property)!;
    let value: number | null;
    try {
      value = crc(offset);
    } catch (error) {
      // A pointer or a chain the next kernel refuses before it reads this checksum.
      if (error instanceof FdtError || error instanceof KhoMapError) return;
      throw error;
    }
    if (value !== null) memory.write(khoFdtPhys + offset, fdtValue.u32(value));
  };
  for (const node of root.children) {
    setCrc(node, KHO_PROP_BLOB_CRC, () => {
      const phys = Number(readU64(node, KHO_PROP_PRESERVED_DATA, le));
      const size = Number(readU64(node, KHO_PROP_BLOB_SIZE, le));
      return size > 0 && memory.contains(phys, size) ? crc32c(memory.read(phys, size)) : null;
    });
  }
  setCrc(root, KHO_PROP_MEMORY_MAP_CRC, () =>
    khoMapCrc(memory, walkKhoMapChain(memory, Number(readU64(root, KHO_PROP_MEMORY_MAP, le)))),
  );
  // Last: it covers the other checksums' values.
  setCrc(root, KHO_PROP_FDT_CRC, (offset) => khoFdtCrc(memory.read(khoFdtPhys, totalSize), offset));
}
