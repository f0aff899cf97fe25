import {
  LUO_FDT_KHO_ENTRY_NAME,
  decodeLuoFdt,
  readLuoFileTable,
  readLuoFlbTable,
  readLuoSessionTable,
} from '@liveupdate/core';
import { FDT_HEADER_SIZE, decodeFdt, readFdtHeader, readU64 } from '@liveupdate/fdt';
import type { PhysicalMemory } from '@liveupdate/machine';

/** A file of the handover: its session, token and the handler's `serialized_data`. */
export interface HandedOverFile {
  readonly session: string;
  readonly compatible: string;
  readonly token: bigint;
  readonly data: number;
}

/** The LUO FDT's tables, found as the next kernel finds them: from the KHO root FDT. */
function luoFdt(memory: PhysicalMemory, khoFdtPhys: number) {
  const header = readFdtHeader(memory.read(khoFdtPhys, FDT_HEADER_SIZE));
  const root = decodeFdt(memory.read(khoFdtPhys, header.totalSize)).root;
  const node = root.children.find((child) => child.name === LUO_FDT_KHO_ENTRY_NAME);
  if (!node) throw new Error(`the KHO root FDT has no ${LUO_FDT_KHO_ENTRY_NAME} node`);
  const le = { littleEndian: true };
  const phys = Number(readU64(node, 'preserved-data', le));
  const size = Number(readU64(node, 'blob-size', le));
  return decodeLuoFdt(memory.read(phys, size));
}

/** Every preserved file of every session in the handover at `khoFdtPhys`. */
export function handedOverFiles(memory: PhysicalMemory, khoFdtPhys: number): HandedOverFile[] {
  const fdt = luoFdt(memory, khoFdtPhys);
  return readLuoSessionTable(memory, Number(fdt.sessionHeaderPhys), 1024).flatMap((session) =>
    readLuoFileTable(memory, Number(session.files), Number(session.count), 1024).map((file) => ({
      session: new TextDecoder().decode(session.name),
      compatible: file.compatible,
      token: file.token,
      data: Number(file.data),
    })),
  );
}

/** The `data` of FLB `name` in the handover at `khoFdtPhys`. */
export function handedOverFlbData(
  memory: PhysicalMemory,
  khoFdtPhys: number,
  name: string,
): number {
  const fdt = luoFdt(memory, khoFdtPhys);
  const flb = readLuoFlbTable(memory, Number(fdt.flbHeaderPhys)).find((f) => f.name === name);
  if (!flb) throw new Error(`the handover has no FLB ${name}`);
  return Number(flb.data);
}
