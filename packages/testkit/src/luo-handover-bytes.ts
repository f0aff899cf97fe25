// The LUO handover as bytes, for tests that damage it on purpose between two kernels (from
// `onHandover`): find it, read it raw, and reseal its checksums after an edit, so that what the
// next kernel's other checks — LUO's and the handler's own — do with the damage is what is tested.
import {
  FDT_HEADER_SIZE,
  decodeFdt,
  encodeFdt,
  fdtValue,
  findNode,
  readFdtHeader,
  readU64,
} from '@liveupdate/fdt';
import {
  LUO_FDT_KHO_ENTRY_NAME,
  LUO_FLB_TABLE_SIZE,
  decodeLuoFdt,
  encodeLuoFdt,
  luoFileSer,
  luoFileSerV1,
  luoSessionHeaderSer,
  luoSessionSer,
  luoSessionSerV1,
  LUO_FLB_MAX,
  luoFlbHeaderSer,
  luoFlbSer,
  type LuoFdt,
  type LuoFlbSer,
} from '@liveupdate/core';
import { crc32c } from '@liveupdate/kernel';
import type { PhysicalMemory } from '@liveupdate/machine';

/**
 * Where the LUO FDT of a handover is, found the way the next kernel finds it: the `LUO` node of
 * the KHO root FDT at `khoFdtPhys`, and its `preserved-data` and `blob-size`.
 */
export function luoFdtLocation(
  memory: PhysicalMemory,
  khoFdtPhys: number,
): { phys: number; size: number } {
  const header = readFdtHeader(memory.read(khoFdtPhys, FDT_HEADER_SIZE));
  const root = decodeFdt(memory.read(khoFdtPhys, header.totalSize)).root;
  const node = findNode(root, `/${LUO_FDT_KHO_ENTRY_NAME}`);
  if (!node) throw new Error(`the KHO root FDT has no ${LUO_FDT_KHO_ENTRY_NAME} node`);
  return {
    phys: Number(readU64(node, 'preserved-data', { littleEndian: true })),
    size: Number(readU64(node, 'blob-size', { littleEndian: true })),
  };
}

/** The LUO FDT a handover carries, decoded. */
export function readLuoFdt(memory: PhysicalMemory, khoFdtPhys: number): LuoFdt {
  const { phys, size } = luoFdtLocation(memory, khoFdtPhys);
  return decodeLuoFdt(memory.read(phys, size));
}

/** A raw `luo-v2` session entry and its raw file entries, as the bytes say (nothing validated). */
export interface RawLuoSession {
  readonly phys: number;
  readonly entry: ReturnType<typeof luoSessionSer.decode>;
  readonly files: { phys: number; entry: ReturnType<typeof luoFileSer.decode> }[];
}

/**
 * The `luo-v2` handover's sessions and files as raw entries with their addresses, read with the
 * codecs alone, so a test can edit bytes the reader would refuse and then {@link sealLuoHandover};
 * and its FLB table (`luo_flb_ser[]`), to find an FLB's `data`.
 */
export function rawLuoHandover(
  memory: PhysicalMemory,
  khoFdtPhys: number,
): { fdt: LuoFdt; sessions: RawLuoSession[]; flbs: LuoFlbSer[] } {
  const fdt = readLuoFdt(memory, khoFdtPhys);
  const header = Number(fdt.sessionHeaderPhys);
  const count = Number(memory.readU64(header));
  const sessions = Array.from({ length: count }, (_, i) => {
    const phys = header + luoSessionHeaderSer.size + i * luoSessionSer.size;
    const entry = luoSessionSer.decode(memory.read(phys, luoSessionSer.size));
    const files = Array.from({ length: Number(entry.count) }, (_, j) => {
      const filePhys = Number(entry.files) + j * luoFileSer.size;
      return { phys: filePhys, entry: luoFileSer.decode(memory.read(filePhys, luoFileSer.size)) };
    });
    return { phys, entry, files };
  });
  // Raw too: a test may have damaged the FLB table on purpose before it reseals.
  const flbHeader = Number(fdt.flbHeaderPhys);
  const flbCount = Math.min(Number(memory.readU64(flbHeader + 8)), LUO_FLB_MAX);
  const flbs = Array.from({ length: flbCount }, (_, i) =>
    luoFlbSer.decode(
      memory.read(flbHeader + luoFlbHeaderSer.size + i * luoFlbSer.size, luoFlbSer.size),
    ),
  );
  return { fdt, sessions, flbs };
}

/**
 * Recompute every checksum of a `luo-v2` handover after a test edited its bytes — each file's
 * `data_crc` (over its `data_size` bytes), each file array's `files_crc`, the session table's and
 * the FLB page's in the LUO FDT — so that the next kernel's other checks are what is tested.
 */
export function sealLuoHandover(memory: PhysicalMemory, khoFdtPhys: number): void {
  const { fdt, sessions } = rawLuoHandover(memory, khoFdtPhys);
  const crcOf = (phys: number | bigint, size: number | bigint) =>
    crc32c(memory.read(Number(phys), Number(size)));
  for (const session of sessions) {
    for (const file of session.files) {
      const dataCrc = file.entry.dataSize === 0n ? 0 : crcOf(file.entry.data, file.entry.dataSize);
      memory.write(file.phys, luoFileSer.encode({ ...file.entry, dataCrc }));
    }
    const size = session.files.length * luoFileSer.size;
    const filesCrc = size === 0 ? 0 : crcOf(session.entry.files, size);
    memory.write(session.phys, luoSessionSer.encode({ ...session.entry, filesCrc }));
  }
  const tableSize = luoSessionHeaderSer.size + sessions.length * luoSessionSer.size;
  writeLuoFdt(memory, khoFdtPhys, {
    ...fdt,
    sessionCrc: crcOf(fdt.sessionHeaderPhys, tableSize),
    flbCrc: crcOf(fdt.flbHeaderPhys, LUO_FLB_TABLE_SIZE),
  });
}

/**
 * Rewrite a `luo-v2` handover, in place, as the `luo-v1` an older kernel writes: the v1 FDT, and
 * the session and file entries without their checksum fields. For tests of an update from an
 * older kernel.
 */
export function downgradeToLuoV1(memory: PhysicalMemory, khoFdtPhys: number): void {
  const { fdt, sessions } = rawLuoHandover(memory, khoFdtPhys);
  sessions.forEach((session, i) => {
    session.files.forEach((file, j) => {
      memory.write(
        Number(session.entry.files) + j * luoFileSerV1.size,
        luoFileSerV1.encode(file.entry),
      );
    });
    const phys =
      Number(fdt.sessionHeaderPhys) + luoSessionHeaderSer.size + i * luoSessionSerV1.size;
    memory.write(phys, luoSessionSerV1.encode(session.entry));
  });
  writeLuoFdt(memory, khoFdtPhys, { ...fdt, version: 1, sessionCrc: null, flbCrc: null });
}

/** Write `fdt` over the LUO FDT and make the KHO root's `blob-size` its new size. */
function writeLuoFdt(memory: PhysicalMemory, khoFdtPhys: number, fdt: LuoFdt): void {
  const { phys } = luoFdtLocation(memory, khoFdtPhys);
  const blob = encodeLuoFdt(fdt);
  memory.write(phys, blob);
  const header = readFdtHeader(memory.read(khoFdtPhys, FDT_HEADER_SIZE));
  const root = decodeFdt(memory.read(khoFdtPhys, header.totalSize)).root;
  const node = findNode(root, `/${LUO_FDT_KHO_ENTRY_NAME}`)!;
  const size = node.properties.find((p) => p.name === 'blob-size')!;
  size.value = fdtValue.u64(BigInt(blob.length), { littleEndian: true });
  const rewritten = encodeFdt(root);
  if (rewritten.length !== header.totalSize) throw new Error('the KHO root FDT changed size');
  memory.write(khoFdtPhys, rewritten);
}
