// The LUO handover as bytes, for tests that damage it on purpose between two kernels (from
// `onHandover`): find it, find one file's serialized state in it, read it raw, and reseal its
// checksums after an edit, so that what the next kernel's other checks — LUO's and the handler's
// own — do with the damage is what is tested.
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
  luoFlbHeaderSer,
  luoFlbMax,
  luoFlbSer,
  luoFlbSerV1,
  type LuoFdt,
} from '@liveupdate/core';
import { crc32c, sealKhoHandover } from '@liveupdate/kernel';
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

/**
 * A raw session entry (`luo_session_ser`) and its raw file entries (`luo_file_ser`), with the
 * physical address of each, as the bytes say (nothing validated). Entries are in the `luo-v2`
 * shape; in a `luo-v1` handover the fields v1 does not have (`filesCrc`, `dataSize`, `dataCrc`,
 * `reserved`) read as 0.
 */
export interface RawLuoSession {
  readonly phys: number;
  readonly entry: ReturnType<typeof luoSessionSer.decode>;
  readonly files: { phys: number; entry: ReturnType<typeof luoFileSer.decode> }[];
}

/**
 * A raw FLB entry (`luo_flb_ser`) and its physical address `phys`, as the bytes say (nothing
 * validated), in the `luo-v2` shape; in a `luo-v1` handover `dataSize`, `dataCrc` and `reserved`
 * read as 0.
 */
export type RawLuoFlb = ReturnType<typeof luoFlbSer.decode> & { readonly phys: number };

/**
 * The handover's sessions and files as raw entries with their addresses, read with the codecs
 * of its LUO ABI version (`luo-v2` or `luo-v1`, `fdt.version`) alone, so a test can edit bytes
 * the reader would refuse and then {@link sealLuoHandover}; and its FLB table (`luo_flb_ser[]`,
 * the entries that fit in its page), to find or damage an FLB's `data`. To find one file's
 * serialized state, {@link findLuoFile}.
 */
export function rawLuoHandover(
  memory: PhysicalMemory,
  khoFdtPhys: number,
): { fdt: LuoFdt; sessions: RawLuoSession[]; flbs: RawLuoFlb[] } {
  const fdt = readLuoFdt(memory, khoFdtPhys);
  const v2 = fdt.version === 2;
  const sessionSize = v2 ? luoSessionSer.size : luoSessionSerV1.size;
  const fileSize = v2 ? luoFileSer.size : luoFileSerV1.size;
  const header = Number(fdt.sessionHeaderPhys);
  const count = Number(memory.readU64(header));
  const sessions = Array.from({ length: count }, (_, i) => {
    const phys = header + luoSessionHeaderSer.size + i * sessionSize;
    const raw = memory.read(phys, sessionSize);
    const entry = v2
      ? luoSessionSer.decode(raw)
      : { ...luoSessionSerV1.decode(raw), filesCrc: 0, reserved: 0 };
    const files = Array.from({ length: Number(entry.count) }, (_, j) => {
      const filePhys = Number(entry.files) + j * fileSize;
      const rawFile = memory.read(filePhys, fileSize);
      const fileEntry = v2
        ? luoFileSer.decode(rawFile)
        : { ...luoFileSerV1.decode(rawFile), dataSize: 0n, dataCrc: 0, reserved: 0 };
      return { phys: filePhys, entry: fileEntry };
    });
    return { phys, entry, files };
  });
  // Raw too: a test may have damaged the FLB table on purpose before it reseals.
  const flbHeader = Number(fdt.flbHeaderPhys);
  const flbSize = v2 ? luoFlbSer.size : luoFlbSerV1.size;
  const flbCount = Math.min(Number(memory.readU64(flbHeader + 8)), luoFlbMax(fdt.version));
  const flbs = Array.from({ length: flbCount }, (_, i): RawLuoFlb => {
    const phys = flbHeader + luoFlbHeaderSer.size + i * flbSize;
    const raw = memory.read(phys, flbSize);
    const entry = v2
      ? luoFlbSer.decode(raw)
      : { ...luoFlbSerV1.decode(raw), dataSize: 0n, dataCrc: 0, reserved: 0 };
    return { phys, ...entry };
  });
  return { fdt, sessions, flbs };
}

/**
 * Recompute every checksum of a `luo-v2` handover after a test edited its bytes — each file's
 * and each FLB's `data_crc` (over its `data_size` bytes), each file array's `files_crc`, the
 * session table's and the FLB page's in the LUO FDT — and last KHO's (`sealKhoHandover`: the LUO
 * FDT's `blob-crc` among them), so that the next kernel's other checks are what is tested. A
 * `luo-v1` handover has no LUO checksums: only KHO's are recomputed.
 */
export function sealLuoHandover(memory: PhysicalMemory, khoFdtPhys: number): void {
  const { fdt, sessions, flbs } = rawLuoHandover(memory, khoFdtPhys);
  if (fdt.version === 1) return sealKhoHandover(memory, khoFdtPhys);
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
  for (const { phys, ...entry } of flbs) {
    const dataCrc = entry.dataSize === 0n ? 0 : crcOf(entry.data, entry.dataSize);
    memory.write(phys, luoFlbSer.encode({ ...entry, dataCrc }));
  }
  const tableSize = luoSessionHeaderSer.size + sessions.length * luoSessionSer.size;
  writeLuoFdt(memory, khoFdtPhys, {
    ...fdt,
    sessionCrc: crcOf(fdt.sessionHeaderPhys, tableSize),
    flbCrc: crcOf(fdt.flbHeaderPhys, LUO_FLB_TABLE_SIZE),
  });
  sealKhoHandover(memory, khoFdtPhys);
}

/**
 * Rewrite a `luo-v2` handover, in place, as the `luo-v1` an older kernel writes: the v1 FDT, and
 * the session, file and FLB entries without their checksum fields; KHO's checksums are resealed.
 * For tests of an update from an older kernel.
 */
export function downgradeToLuoV1(memory: PhysicalMemory, khoFdtPhys: number): void {
  const { fdt, sessions, flbs } = rawLuoHandover(memory, khoFdtPhys);
  if (fdt.version === 1) throw new Error('downgradeToLuoV1: the handover is luo-v1 already');
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
  // The v1 entries are shorter: rewrite the array whole, zeros after it as the writer leaves.
  const flbArray = Number(fdt.flbHeaderPhys) + luoFlbHeaderSer.size;
  memory.fill(flbArray, flbs.length * luoFlbSer.size, 0);
  flbs.forEach((flb, i) => {
    memory.write(flbArray + i * luoFlbSerV1.size, luoFlbSerV1.encode(flb));
  });
  writeLuoFdt(memory, khoFdtPhys, { ...fdt, version: 1, sessionCrc: null, flbCrc: null });
  sealKhoHandover(memory, khoFdtPhys);
}

/** One file of a handover, found by {@link findLuoFile}: its entry and its serialized state. */
export interface LuoHandoverFile {
  /** The LUO ABI version of the handover: 2 (`luo-v2`) or 1 (`luo-v1`). */
  readonly version: LuoFdt['version'];
  /** The file's session, raw. */
  readonly session: RawLuoSession;
  /** Physical address of the file's `luo_file_ser`. */
  readonly phys: number;
  /** The file's `luo_file_ser`, raw (in a `luo-v1` handover, `dataSize` and `dataCrc` are 0). */
  readonly entry: RawLuoSession['files'][number]['entry'];
  /**
   * `luo_file_ser.data`: the `serializedData` the handler's `preserve` (or `freeze`) set — for a
   * handler that hands over an address, the physical address of its serialized state.
   */
  readonly data: bigint;
  /**
   * `luo_file_ser.data_size`: how many bytes at `data` the handler wrote and LUO's `data_crc`
   * covers; `null` in a `luo-v1` handover, which does not record it (the handler's own header
   * says how long its state is).
   */
  readonly dataSize: number | null;
}

/**
 * Find the file preserved under `token` in session `sessionName` of the handover at
 * `khoFdtPhys`, with the address and size of its serialized state, so that a test, from
 * `onHandover`, damages exactly its own handler's state; then {@link sealLuoHandover} recomputes
 * LUO's checksums, so that what the handler does with the damage is what is tested (leave it out
 * to test LUO's own refusal). Works on `luo-v2` and `luo-v1` handovers. Reads raw bytes as
 * {@link rawLuoHandover} does. Throws an `Error` naming the session or token that is absent,
 * and what the handover holds instead.
 *
 * @example
 * ```ts
 * const harness = await bootForLiveUpdate({
 *   modules: ['my-handler'],
 *   onHandover({ memory, khoFdtPhys }) {
 *     const { data } = findLuoFile(memory, khoFdtPhys!, 'vm0', 1n);
 *     memory.writeU32(Number(data) + 8, 0xdead); // a field of your own header
 *     sealLuoHandover(memory, khoFdtPhys!);
 *   },
 * });
 * ```
 */
export function findLuoFile(
  memory: PhysicalMemory,
  khoFdtPhys: number,
  sessionName: string,
  token: bigint | number,
): LuoHandoverFile {
  const { fdt, sessions } = rawLuoHandover(memory, khoFdtPhys);
  const decoder = new TextDecoder();
  const nameOf = (session: RawLuoSession) => decoder.decode(session.entry.name);
  const session = sessions.find((s) => nameOf(s) === sessionName);
  if (!session) {
    const names = sessions.map((s) => JSON.stringify(nameOf(s))).join(', ');
    throw new Error(
      `findLuoFile: the handover has no session ${JSON.stringify(sessionName)} (it has ${names || 'none'})`,
    );
  }
  const wanted = BigInt(token);
  const file = session.files.find((f) => f.entry.token === wanted);
  if (!file) {
    const tokens = session.files.map((f) => String(f.entry.token)).join(', ');
    throw new Error(
      `findLuoFile: session ${JSON.stringify(sessionName)} has no file with token ${wanted} (its tokens: ${tokens || 'none'})`,
    );
  }
  return {
    version: fdt.version,
    session,
    phys: file.phys,
    entry: file.entry,
    data: file.entry.data,
    dataSize: fdt.version === 2 ? Number(file.entry.dataSize) : null,
  };
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
