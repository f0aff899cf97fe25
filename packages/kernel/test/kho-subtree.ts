import { FDT_HEADER_SIZE, decodeFdt, readFdtHeader, readU64 } from '@liveupdate/fdt';
import type { PhysicalMemory } from '@liveupdate/machine';
import { sealKhoHandover } from '../src/kho/seal-kho-handover.js';

/** The KHO root FDT at `fdtPhys`, its bytes in RAM. */
function rootFdtBytes(memory: PhysicalMemory, fdtPhys: number): Uint8Array {
  const header = readFdtHeader(memory.read(fdtPhys, FDT_HEADER_SIZE));
  return memory.view(fdtPhys, header.totalSize);
}

/** The blob address of subtree `name`, found as the next kernel finds it: its `preserved-data`. */
export function khoSubtreeBlob(memory: PhysicalMemory, fdtPhys: number, name: string): number {
  const node = decodeFdt(rootFdtBytes(memory, fdtPhys)).root.children.find((c) => c.name === name);
  if (!node) throw new Error(`the KHO root FDT has no ${name} node`);
  return Number(readU64(node, 'preserved-data', { littleEndian: true }));
}

/**
 * Damage the name of subtree `name` in the KHO root FDT in place (one byte, so the FDT stays
 * well formed): what a bit flip in the structure block does. The node's `FDT_BEGIN_NODE` token
 * is followed by its NUL-terminated name. Then KHO's checksums are resealed, so that what the
 * next kernel does with a missing subtree is tested, not its `fdt-crc`.
 */
export function damageKhoSubtreeName(memory: PhysicalMemory, fdtPhys: number, name: string): void {
  const bytes = rootFdtBytes(memory, fdtPhys);
  const needle = Uint8Array.from([0, 0, 0, 1, ...new TextEncoder().encode(name), 0]);
  const at = Buffer.from(bytes).indexOf(needle);
  if (at < 0) throw new Error(`the KHO root FDT has no ${name} node`);
  const last = at + 4 + name.length - 1;
  bytes[last] = bytes[last]! ^ 0x01;
  sealKhoHandover(memory, fdtPhys);
}
