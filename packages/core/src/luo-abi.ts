/**
 * The LUO handover ABI: everything one kernel hands the next, as bytes at physical addresses.
 * Integers are little-endian, structs packed. `luo-v2` is written; `luo-v1` (the document's FDT
 * layout, `include/linux/kho/abi/luo.h` of G1) is still read, so an older kernel can update to
 * this one. `luo-v2` is `luo-v1` plus CRC32C checksums (`crc32c` of `@liveupdate/kernel`):
 *
 * ```
 * KHO subtree "LUO" → FDT
 * / {
 *     compatible = "luo-v2";                // or "luo-v1"
 *     liveupdate-number = <u64>;            // native-endian (little-endian)
 *     luo-session {
 *         compatible = "luo-session-v2";    // "luo-session-v1" under luo-v1
 *         luo-session-header = <u64>;       // phys of luo_session_header_ser
 *         luo-session-crc = <u32>;          // v2: crc32c of the header and the session array
 *     };
 *     luo-flb {
 *         compatible = "luo-flb-v2";        // "luo-flb-v1" under luo-v1
 *         luo-flb-header = <u64>;           // phys of luo_flb_header_ser (one page)
 *         luo-flb-crc = <u32>;              // v2: crc32c of the whole page
 *     };
 * };
 * luo_session_header_ser { count }, then luo_session_ser[count]
 *     luo_session_ser.files → luo_file_ser[luo_session_ser.count]
 *         luo_file_ser.data → the handler's own preserved data
 * luo_flb_header_ser { pgcnt = 1, count }, then luo_flb_ser[count]
 *     luo_flb_ser.data → the FLB's own preserved data (v2: data_size bytes of it checksummed)
 * ```
 *
 * Unlike G1, the arrays are sized to what they hold; the caps are the caller's configuration.
 * Readers validate everything before returning anything, and throw {@link LuoAbiError}.
 */
import {
  FdtError,
  decodeFdt,
  encodeFdt,
  fdtNode,
  fdtValue,
  findNode,
  readStringList,
  readU32,
  readU64,
  type FdtNode,
} from '@liveupdate/fdt';
import { hex, type PhysicalMemory } from '@liveupdate/machine';
import { LIVEUPDATE_HNDL_COMPAT_LENGTH } from './file-handler.js';
import { LIVEUPDATE_SESSION_NAME_LENGTH } from './liveupdate-uapi.js';
import { printableSessionName, sessionNameKey } from './session-name.js';
import {
  cbytes,
  cstring,
  defineStruct,
  strnlen,
  u32,
  u64,
  type StructCodec,
} from './struct-codec.js';

/** Name of LUO's KHO subtree (`LUO_FDT_KHO_ENTRY_NAME`). */
export const LUO_FDT_KHO_ENTRY_NAME = 'LUO';
/** `compatible` of the LUO FDT's root: the version of the whole ABI, the one written. */
export const LUO_FDT_COMPATIBLE = 'luo-v2';
/** The first version, without checksums: still read, never written. */
export const LUO_FDT_COMPATIBLE_V1 = 'luo-v1';
/** Root property: the number of live updates so far, a native-endian u64. */
export const LUO_FDT_LIVEUPDATE_NUM = 'liveupdate-number';
/** The node describing the sessions. */
export const LUO_FDT_SESSION_NODE_NAME = 'luo-session';
/** `compatible` of the session node: the version of the session and file structs below. */
export const LUO_FDT_SESSION_COMPATIBLE = 'luo-session-v2';
/** The session node's `compatible` under `luo-v1`. */
export const LUO_FDT_SESSION_COMPATIBLE_V1 = 'luo-session-v1';
/** Session node property: physical address of `luo_session_header_ser`, a native-endian u64. */
export const LUO_FDT_SESSION_HEADER = 'luo-session-header';
/** Session node property (v2): crc32c of the header and the session array, a `<u32>` cell. */
export const LUO_FDT_SESSION_CRC = 'luo-session-crc';

/** The node describing the FLBs (file-lifecycle-bound objects). */
export const LUO_FDT_FLB_NODE_NAME = 'luo-flb';
/** `compatible` of the FLB node: the version of the FLB structs below. */
export const LUO_FDT_FLB_COMPATIBLE = 'luo-flb-v2';
/** The FLB node's `compatible` under `luo-v1`. */
export const LUO_FDT_FLB_COMPATIBLE_V1 = 'luo-flb-v1';
/** FLB node property: physical address of `luo_flb_header_ser`, a native-endian u64. */
export const LUO_FDT_FLB_HEADER = 'luo-flb-header';
/** FLB node property (v2): crc32c of the whole FLB page, a `<u32>` cell. */
export const LUO_FDT_FLB_CRC = 'luo-flb-crc';
/** Size of `name` in `luo_flb_ser`, including the NUL (`LIVEUPDATE_FLB_COMPAT_LENGTH`). */
export const LIVEUPDATE_FLB_COMPAT_LENGTH = 48;
/** Pages of the FLB table: `luo_flb_header_ser.pgcnt` is always 1. */
export const LUO_FLB_PGCNT = 1;
/** Bytes of the FLB table: one page. */
export const LUO_FLB_TABLE_SIZE = LUO_FLB_PGCNT * 4096;
/** `LUO_FLB_MAX`: the `luo-v2` FLBs that fit in one page after the header, (4096 − 16) / 80 = 51. */
export const LUO_FLB_MAX = Math.floor((LUO_FLB_TABLE_SIZE - 16) / 80);
/** The `luo-v1` FLBs that fit in one page after the header, (4096 − 16) / 64 = 63. */
export const LUO_FLB_MAX_V1 = Math.floor((LUO_FLB_TABLE_SIZE - 16) / 64);

/** `struct luo_session_header_ser`: heads the session array. */
export interface LuoSessionHeaderSer {
  /** Number of `luo_session_ser` entries right after the header. */
  count: bigint;
}

/** The version of the structs: 1 (`luo-v1`, no checksums) or 2 (`luo-v2`). */
export type LuoAbiVersion = 1 | 2;

/** The LUO ABI versions this core reads and can write, newest first. */
export const LUO_ABI_VERSIONS: readonly LuoAbiVersion[] = [2, 1];

/** `luo-v2` or `luo-v1`: the LUO FDT's root compatible of an ABI version. */
export function luoAbiCompatible(version: LuoAbiVersion): string {
  return version === 2 ? LUO_FDT_COMPATIBLE : LUO_FDT_COMPATIBLE_V1;
}

/** `struct luo_session_ser`, with its embedded `struct luo_file_set_ser` flattened. */
export interface LuoSessionSer {
  /** The session's name: 1..63 bytes of any value but NUL, compared as bytes. */
  name: Uint8Array;
  /** `file_set_ser.files`: physical address of the session's `luo_file_ser[]`, 0 if none. */
  files: bigint;
  /** `file_set_ser.count`: number of files. */
  count: bigint;
  /** v2: crc32c of the file array (`count` entries; 0 when there are none). 0 in v1. */
  filesCrc: number;
}

/** `struct luo_file_ser`: one preserved file. */
export interface LuoFileSer {
  /** The compatible string of the handler that preserved the file. */
  compatible: string;
  /** The handler's handle to its preserved data (`serialized_data`). */
  data: bigint;
  /** The user's token for the file. */
  token: bigint;
  /**
   * v2: bytes `dataCrc` covers from `data` — the whole KHO-preserved folio that `data` is the
   * start of — or 0 when `data` is not the start of a folio the old kernel preserved (nothing
   * is checksummed). 0 in v1.
   */
  dataSize: bigint;
  /** v2: crc32c of the `dataSize` bytes at `data`, taken after the file's `freeze`. 0 in v1. */
  dataCrc: number;
}

/** `struct luo_flb_header_ser`: heads the FLB array. */
export interface LuoFlbHeaderSer {
  /** Pages of the table, header included: always {@link LUO_FLB_PGCNT}. */
  pgcnt: bigint;
  /** Number of `luo_flb_ser` entries right after the header. */
  count: bigint;
}

/** `struct luo_flb_ser`: one FLB preserved by at least one file. */
export interface LuoFlbSer {
  /** The FLB's compatible string, 1..47 bytes. */
  name: string;
  /** The FLB's handle to its preserved data (set by its `preserve`). */
  data: bigint;
  /** The outgoing refcount: how many preserved files depend on the FLB (at least 1). */
  count: bigint;
  /**
   * v2: bytes `dataCrc` covers from `data` — the whole KHO-preserved folio that `data` is the
   * start of — or 0 when `data` is not the start of a folio the old kernel preserved (nothing
   * is checksummed). 0 in v1.
   */
  dataSize: bigint;
  /** v2: crc32c of the `dataSize` bytes at `data`, taken when the table is written. 0 in v1. */
  dataCrc: number;
}

/** `struct luo_flb_header_ser` (16 bytes): `pgcnt` u64 @0, `count` u64 @8. */
export const luoFlbHeaderSer: StructCodec<LuoFlbHeaderSer> = defineStruct('luo_flb_header_ser', [
  ['pgcnt', u64],
  ['count', u64],
] as const);

/**
 * `struct luo_flb_ser` of `luo-v2` (80 bytes): `name` char[48] @0, `data` u64 @48, `count` u64
 * @56, `data_size` u64 @64, `data_crc` u32 @72, `reserved` u32 @76 (0).
 */
export const luoFlbSer = defineStruct('luo_flb_ser', [
  ['name', cstring(LIVEUPDATE_FLB_COMPAT_LENGTH)],
  ['data', u64],
  ['count', u64],
  ['dataSize', u64],
  ['dataCrc', u32],
  ['reserved', u32],
] as const);

/** `struct luo_flb_ser` of `luo-v1` (64 bytes): `name` char[48] @0, `data` u64 @48, `count` u64 @56. */
export const luoFlbSerV1 = defineStruct('luo_flb_ser', [
  ['name', cstring(LIVEUPDATE_FLB_COMPAT_LENGTH)],
  ['data', u64],
  ['count', u64],
] as const);

/** `struct luo_session_header_ser` (8 bytes): `count` u64 @0. */
export const luoSessionHeaderSer: StructCodec<LuoSessionHeaderSer> = defineStruct(
  'luo_session_header_ser',
  [['count', u64]] as const,
);

/**
 * `struct luo_session_ser` of `luo-v2` (88 bytes): `name` char[64] @0, `file_set_ser.files` u64
 * @64, `file_set_ser.count` u64 @72, `files_crc` u32 @80, `reserved` u32 @84 (0).
 */
export const luoSessionSer = defineStruct('luo_session_ser', [
  ['name', cbytes(LIVEUPDATE_SESSION_NAME_LENGTH)],
  ['files', u64],
  ['count', u64],
  ['filesCrc', u32],
  ['reserved', u32],
] as const);

/**
 * `struct luo_session_ser` of `luo-v1` (80 bytes): `name` char[64] @0, `file_set_ser.files` u64
 * @64, `file_set_ser.count` u64 @72.
 */
export const luoSessionSerV1 = defineStruct('luo_session_ser', [
  ['name', cbytes(LIVEUPDATE_SESSION_NAME_LENGTH)],
  ['files', u64],
  ['count', u64],
] as const);

/**
 * `struct luo_file_ser` of `luo-v2` (80 bytes): `compatible` char[48] @0, `data` u64 @48,
 * `token` u64 @56, `data_size` u64 @64, `data_crc` u32 @72, `reserved` u32 @76 (0).
 */
export const luoFileSer = defineStruct('luo_file_ser', [
  ['compatible', cstring(LIVEUPDATE_HNDL_COMPAT_LENGTH)],
  ['data', u64],
  ['token', u64],
  ['dataSize', u64],
  ['dataCrc', u32],
  ['reserved', u32],
] as const);

/** `struct luo_file_ser` of `luo-v1` (64 bytes): `compatible` char[48] @0, `data` u64 @48, `token` u64 @56. */
export const luoFileSerV1 = defineStruct('luo_file_ser', [
  ['compatible', cstring(LIVEUPDATE_HNDL_COMPAT_LENGTH)],
  ['data', u64],
  ['token', u64],
] as const);

const sessionSer = (version: LuoAbiVersion) => (version === 2 ? luoSessionSer : luoSessionSerV1);
const fileSer = (version: LuoAbiVersion) => (version === 2 ? luoFileSer : luoFileSerV1);
const flbSer = (version: LuoAbiVersion) => (version === 2 ? luoFlbSer : luoFlbSerV1);

/** The FLBs one page of the FLB table holds: {@link LUO_FLB_MAX}, or {@link LUO_FLB_MAX_V1}. */
export function luoFlbMax(version: LuoAbiVersion): number {
  return version === 2 ? LUO_FLB_MAX : LUO_FLB_MAX_V1;
}

/** Decode a session entry of either version; a v2 entry's `reserved` must be 0. */
function decodeSession(raw: Uint8Array, offset: number, version: LuoAbiVersion): LuoSessionSer {
  if (version === 1) return { ...luoSessionSerV1.decode(raw, offset), filesCrc: 0 };
  const { reserved, ...session } = luoSessionSer.decode(raw, offset);
  if (reserved !== 0) throw new LuoAbiError(`reserved is ${hex(reserved)}, not 0`);
  return session;
}

/** Decode a file entry of either version; a v2 entry's `reserved` must be 0. */
function decodeFile(raw: Uint8Array, offset: number, version: LuoAbiVersion): LuoFileSer {
  if (version === 1) return { ...luoFileSerV1.decode(raw, offset), dataSize: 0n, dataCrc: 0 };
  const { reserved, ...file } = luoFileSer.decode(raw, offset);
  if (reserved !== 0) throw new LuoAbiError(`reserved is ${hex(reserved)}, not 0`);
  return file;
}

/** Decode an FLB entry of either version; a v2 entry's `reserved` must be 0. */
function decodeFlb(raw: Uint8Array, offset: number, version: LuoAbiVersion): LuoFlbSer {
  if (version === 1) return { ...luoFlbSerV1.decode(raw, offset), dataSize: 0n, dataCrc: 0 };
  const { reserved, ...flb } = luoFlbSer.decode(raw, offset);
  if (reserved !== 0) throw new LuoAbiError(`reserved is ${hex(reserved)}, not 0`);
  return flb;
}

const MARKER = Symbol.for('liveupdate.LuoAbiError');

/**
 * The incoming LUO data is corrupt or of another ABI version; the message says what is missing or
 * wrong and where. At boot the kernel panics on it (`luo_restore_fail()`).
 */
export class LuoAbiError extends Error {
  override readonly name = 'LuoAbiError';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    Object.defineProperty(this, MARKER, { value: true });
  }

  /** Whether `value` is a LuoAbiError from any copy of this package. */
  static isInstance(value: unknown): value is LuoAbiError {
    return typeof value === 'object' && value !== null && MARKER in value;
  }
}

/** What the LUO FDT carries. */
export interface LuoFdt {
  /** 2 for `luo-v2` (what is written), 1 for `luo-v1`. */
  version: LuoAbiVersion;
  /** `liveupdate-number`: live updates so far, counting the one this FDT was written for. */
  liveupdateNumber: bigint;
  /** `luo-session/luo-session-header`: physical address of `luo_session_header_ser`. */
  sessionHeaderPhys: bigint;
  /** v2 `luo-session/luo-session-crc`: crc32c of the session table; `null` in v1. */
  sessionCrc: number | null;
  /** `luo-flb/luo-flb-header`: physical address of `luo_flb_header_ser`. */
  flbHeaderPhys: bigint;
  /** v2 `luo-flb/luo-flb-crc`: crc32c of the FLB page; `null` in v1. */
  flbCrc: number | null;
}

const NATIVE_ENDIAN = { littleEndian: true };

/**
 * Build the LUO FDT blob (DTB v17) for KHO's `LUO` subtree: `luo-v2` with its checksums, or
 * `luo-v1` (for tests of an update from an older kernel) when `fdt.version` is 1.
 *
 * @throws LuoAbiError when a v2 FDT lacks a checksum
 */
export function encodeLuoFdt(fdt: LuoFdt): Uint8Array {
  const v2 = fdt.version === 2;
  if (v2 && (fdt.sessionCrc === null || fdt.flbCrc === null)) {
    throw new LuoAbiError('a luo-v2 FDT needs luo-session-crc and luo-flb-crc');
  }
  const crc = (name: string, value: number | null) => (v2 ? { [name]: fdtValue.u32(value!) } : {});
  return encodeFdt(
    fdtNode(
      '',
      {
        compatible: fdtValue.string(v2 ? LUO_FDT_COMPATIBLE : LUO_FDT_COMPATIBLE_V1),
        [LUO_FDT_LIVEUPDATE_NUM]: fdtValue.u64(fdt.liveupdateNumber, NATIVE_ENDIAN),
      },
      [
        fdtNode(LUO_FDT_SESSION_NODE_NAME, {
          compatible: fdtValue.string(
            v2 ? LUO_FDT_SESSION_COMPATIBLE : LUO_FDT_SESSION_COMPATIBLE_V1,
          ),
          [LUO_FDT_SESSION_HEADER]: fdtValue.u64(fdt.sessionHeaderPhys, NATIVE_ENDIAN),
          ...crc(LUO_FDT_SESSION_CRC, fdt.sessionCrc),
        }),
        fdtNode(LUO_FDT_FLB_NODE_NAME, {
          compatible: fdtValue.string(v2 ? LUO_FDT_FLB_COMPATIBLE : LUO_FDT_FLB_COMPATIBLE_V1),
          [LUO_FDT_FLB_HEADER]: fdtValue.u64(fdt.flbHeaderPhys, NATIVE_ENDIAN),
          ...crc(LUO_FDT_FLB_CRC, fdt.flbCrc),
        }),
      ],
    ),
  );
}

/**
 * Read the LUO FDT of the previous kernel, `luo-v2` or `luo-v1`. Like
 * `fdt_node_check_compatible()`, a node is compatible when its `compatible` list holds the
 * expected string; the nodes must be of the root's version.
 *
 * @throws LuoAbiError when the blob is not a valid FDT, a node or property is missing, a
 *   `compatible` is not ours or mixes versions, or a u64 property is not 8 bytes
 */
export function decodeLuoFdt(blob: Uint8Array): LuoFdt {
  const root = fdtOrThrow('LUO FDT is not a valid FDT', () => decodeFdt(blob).root);
  const rootList = fdtOrThrow('LUO FDT', () => readStringList(root, 'compatible'));
  if (!rootList.includes(LUO_FDT_COMPATIBLE) && !rootList.includes(LUO_FDT_COMPATIBLE_V1)) {
    throw new LuoAbiError(
      `LUO FDT node / is not compatible with "${LUO_FDT_COMPATIBLE}" or "${LUO_FDT_COMPATIBLE_V1}": it says ${JSON.stringify(rootList)}`,
    );
  }
  const version: LuoAbiVersion = rootList.includes(LUO_FDT_COMPATIBLE) ? 2 : 1;
  const liveupdateNumber = fdtOrThrow('LUO FDT', () =>
    readU64(root, LUO_FDT_LIVEUPDATE_NUM, NATIVE_ENDIAN),
  );
  const v2 = version === 2;
  const session = readChild(
    root,
    LUO_FDT_SESSION_NODE_NAME,
    v2 ? LUO_FDT_SESSION_COMPATIBLE : LUO_FDT_SESSION_COMPATIBLE_V1,
    LUO_FDT_SESSION_HEADER,
    v2 ? LUO_FDT_SESSION_CRC : null,
  );
  const flb = readChild(
    root,
    LUO_FDT_FLB_NODE_NAME,
    v2 ? LUO_FDT_FLB_COMPATIBLE : LUO_FDT_FLB_COMPATIBLE_V1,
    LUO_FDT_FLB_HEADER,
    v2 ? LUO_FDT_FLB_CRC : null,
  );
  return {
    version,
    liveupdateNumber,
    sessionHeaderPhys: session.phys,
    sessionCrc: session.crc,
    flbHeaderPhys: flb.phys,
    flbCrc: flb.crc,
  };
}

/** The u64 `property` (and the u32 `crcProperty`) of the root's child `name`, which must be `compatible`. */
function readChild(
  root: FdtNode,
  name: string,
  compatible: string,
  property: string,
  crcProperty: string | null,
): { phys: bigint; crc: number | null } {
  const path = `/${name}`;
  const node = findNode(root, path);
  if (node === undefined) throw new LuoAbiError(`LUO FDT has no node ${path}`);
  checkCompatible(node, path, compatible);
  const phys = fdtOrThrow('LUO FDT', () => readU64(node, property, NATIVE_ENDIAN));
  const crc = crcProperty === null ? null : fdtOrThrow('LUO FDT', () => readU32(node, crcProperty));
  return { phys, crc };
}

/**
 * The root `compatible` list of `blob` if it is a valid FDT that has one, else `undefined`: to
 * recognise a LUO FDT published under another subtree name.
 */
export function decodeFdtCompatible(blob: Uint8Array): string[] | undefined {
  try {
    return readStringList(decodeFdt(blob).root, 'compatible');
  } catch (error) {
    if (error instanceof FdtError) return undefined;
    throw error;
  }
}

function checkCompatible(node: FdtNode, path: string, expected: string): void {
  const list = fdtOrThrow('LUO FDT', () => readStringList(node, 'compatible'));
  if (!list.includes(expected)) {
    throw new LuoAbiError(
      `LUO FDT node ${path} is not compatible with ${JSON.stringify(expected)}: it says ${JSON.stringify(list)}`,
    );
  }
}

function fdtOrThrow<T>(context: string, read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (error instanceof FdtError) {
      throw new LuoAbiError(`${context}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

/** Bytes of a session table of `n` sessions: the header and the array. */
export function luoSessionTableSize(n: number, version: LuoAbiVersion = 2): number {
  return luoSessionHeaderSer.size + n * sessionSer(version).size;
}

/** Bytes of a file table of `n` files. */
export function luoFileTableSize(n: number, version: LuoAbiVersion = 2): number {
  return n * fileSer(version).size;
}

/**
 * Read and validate the session table at `headerPhys`: the header and the array lie in RAM,
 * `count` ≤ `maxSessions`, and every name is 1..63 bytes, NUL-terminated and unique.
 *
 * @throws LuoAbiError on the first problem, naming the entry
 */
export function readLuoSessionTable(
  memory: PhysicalMemory,
  headerPhys: number,
  maxSessions: number,
  version: LuoAbiVersion = 2,
): LuoSessionSer[] {
  const entrySize = sessionSer(version).size;
  const where = `luo_session_header_ser at ${hex(headerPhys)}`;
  if (!memory.contains(headerPhys, luoSessionHeaderSer.size)) {
    throw new LuoAbiError(`${where} is outside RAM`);
  }
  const { count } = luoSessionHeaderSer.decode(memory.read(headerPhys, luoSessionHeaderSer.size));
  if (count > BigInt(maxSessions)) {
    throw new LuoAbiError(`${where}: count ${count} is more than the ${maxSessions} allowed`);
  }
  const n = Number(count);
  const arrayPhys = headerPhys + luoSessionHeaderSer.size;
  const arraySize = n * entrySize;
  if (!memory.contains(arrayPhys, arraySize)) {
    throw new LuoAbiError(`${where}: its ${n} luo_session_ser entries run outside RAM`);
  }
  // One copy, so every check and the values returned see the same bytes.
  const raw = memory.read(arrayPhys, arraySize);
  const sessions: LuoSessionSer[] = [];
  const names = new Set<string>();
  for (let i = 0; i < n; i++) {
    const offset = i * entrySize;
    const entry = `${where}: luo_session_ser[${i}]`;
    const nameField = raw.subarray(offset, offset + LIVEUPDATE_SESSION_NAME_LENGTH);
    const length = strnlen(nameField, LIVEUPDATE_SESSION_NAME_LENGTH);
    if (length === LIVEUPDATE_SESSION_NAME_LENGTH) {
      throw new LuoAbiError(
        `${entry}: name has no NUL within ${LIVEUPDATE_SESSION_NAME_LENGTH} bytes`,
      );
    }
    if (length === 0) throw new LuoAbiError(`${entry}: name is empty`);
    const session = entryOrThrow(entry, () => decodeSession(raw, offset, version));
    const key = sessionNameKey(session.name);
    if (names.has(key)) {
      throw new LuoAbiError(`${entry}: name "${printableSessionName(session.name)}" appears twice`);
    }
    names.add(key);
    sessions.push(session);
  }
  return sessions;
}

/**
 * Read and validate a session's file table: `count` ≤ `maxFiles`, the array lies in RAM (and is
 * not at address 0 unless empty), and every compatible is 1..47 bytes, NUL-terminated, with no
 * token used twice.
 *
 * @throws LuoAbiError on the first problem, naming the entry
 */
export function readLuoFileTable(
  memory: PhysicalMemory,
  filesPhys: number,
  count: number,
  maxFiles: number,
  version: LuoAbiVersion = 2,
): LuoFileSer[] {
  const entrySize = fileSer(version).size;
  const where = `luo_file_ser[${count}] at ${hex(filesPhys)}`;
  if (!Number.isSafeInteger(count) || count < 0 || count > maxFiles) {
    throw new LuoAbiError(`${where}: count ${count} is not in 0..${maxFiles}`);
  }
  if (count === 0) return [];
  const arraySize = luoFileTableSize(count, version);
  if (filesPhys === 0 || !memory.contains(filesPhys, arraySize)) {
    throw new LuoAbiError(`${where} is outside RAM`);
  }
  const raw = memory.read(filesPhys, arraySize);
  const files: LuoFileSer[] = [];
  const tokens = new Set<bigint>();
  for (let i = 0; i < count; i++) {
    const offset = i * entrySize;
    const entry = `${where}: entry ${i}`;
    const compatibleField = raw.subarray(offset, offset + LIVEUPDATE_HNDL_COMPAT_LENGTH);
    const length = strnlen(compatibleField, LIVEUPDATE_HNDL_COMPAT_LENGTH);
    if (length === LIVEUPDATE_HNDL_COMPAT_LENGTH) {
      throw new LuoAbiError(
        `${entry}: compatible has no NUL within ${LIVEUPDATE_HNDL_COMPAT_LENGTH} bytes`,
      );
    }
    if (length === 0) throw new LuoAbiError(`${entry}: compatible is empty`);
    const file = entryOrThrow(entry, () => decodeFile(raw, offset, version));
    if (tokens.has(file.token)) {
      throw new LuoAbiError(`${entry}: token ${file.token} appears twice`);
    }
    tokens.add(file.token);
    files.push(file);
  }
  return files;
}

/**
 * Write the session table (header and array, {@link luoSessionTableSize} bytes) at `phys`.
 * Refuses, before writing a byte, what {@link readLuoSessionTable} would refuse.
 *
 * @throws LuoAbiError for an empty, too long or repeated name, or a range outside RAM
 */
export function writeLuoSessionTable(
  memory: PhysicalMemory,
  phys: number,
  sessions: readonly LuoSessionSer[],
  version: LuoAbiVersion = 2,
): void {
  const where = `session table at ${hex(phys)}`;
  const out = new Uint8Array(luoSessionTableSize(sessions.length, version));
  luoSessionHeaderSer.encodeInto(out, 0, { count: BigInt(sessions.length) });
  const names = new Set<string>();
  sessions.forEach((session, i) => {
    const entry = `${where}: session ${i} "${printableSessionName(session.name)}"`;
    const key = sessionNameKey(session.name);
    if (key === '') throw new LuoAbiError(`${entry}: name is empty`);
    if (names.has(key)) throw new LuoAbiError(`${entry}: name appears twice`);
    names.add(key);
    const offset = luoSessionHeaderSer.size + i * sessionSer(version).size;
    encodeOrThrow(entry, () =>
      version === 2
        ? luoSessionSer.encodeInto(out, offset, { ...session, reserved: 0 })
        : luoSessionSerV1.encodeInto(out, offset, session),
    );
  });
  writeOrThrow(memory, phys, out, where);
}

/**
 * Write a file table ({@link luoFileTableSize} bytes) at `phys`. Refuses, before writing a byte,
 * what {@link readLuoFileTable} would refuse.
 *
 * @throws LuoAbiError for an empty or too long compatible, a repeated token, or a range outside RAM
 */
export function writeLuoFileTable(
  memory: PhysicalMemory,
  phys: number,
  files: readonly LuoFileSer[],
  version: LuoAbiVersion = 2,
): void {
  const where = `file table at ${hex(phys)}`;
  const out = new Uint8Array(luoFileTableSize(files.length, version));
  const tokens = new Set<bigint>();
  files.forEach((file, i) => {
    const entry = `${where}: file ${i} (token ${file.token})`;
    if (file.compatible === '') throw new LuoAbiError(`${entry}: compatible is empty`);
    if (tokens.has(file.token)) throw new LuoAbiError(`${entry}: token appears twice`);
    tokens.add(file.token);
    const offset = i * fileSer(version).size;
    encodeOrThrow(entry, () =>
      version === 2
        ? luoFileSer.encodeInto(out, offset, { ...file, reserved: 0 })
        : luoFileSerV1.encodeInto(out, offset, file),
    );
  });
  writeOrThrow(memory, phys, out, where);
}

function entryOrThrow<T>(entry: string, decode: () => T): T {
  try {
    return decode();
  } catch (error) {
    if (error instanceof LuoAbiError) {
      throw new LuoAbiError(`${entry}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

function encodeOrThrow(entry: string, encode: () => void): void {
  try {
    encode();
  } catch (error) {
    if (error instanceof RangeError) {
      throw new LuoAbiError(`${entry}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

function writeOrThrow(memory: PhysicalMemory, phys: number, bytes: Uint8Array, where: string) {
  if (!memory.contains(phys, bytes.length)) {
    throw new LuoAbiError(`${where}: ${bytes.length} bytes run outside RAM`);
  }
  memory.write(phys, bytes);
}

/**
 * Read and validate the FLB table at `headerPhys`: the page lies in RAM, `pgcnt` is 1, `count` ≤
 * {@link luoFlbMax}, and every name is 1..47 bytes, NUL-terminated and unique, with a count of
 * at least 1 (only FLBs some file depends on are written) and (v2) `reserved` 0.
 *
 * @throws LuoAbiError on the first problem, naming the entry
 */
export function readLuoFlbTable(
  memory: PhysicalMemory,
  headerPhys: number,
  version: LuoAbiVersion = 2,
): LuoFlbSer[] {
  const where = `luo_flb_header_ser at ${hex(headerPhys)}`;
  if (headerPhys === 0 || !memory.contains(headerPhys, LUO_FLB_TABLE_SIZE)) {
    throw new LuoAbiError(`${where} is outside RAM`);
  }
  const raw = memory.read(headerPhys, LUO_FLB_TABLE_SIZE);
  const { pgcnt, count } = luoFlbHeaderSer.decode(raw);
  if (pgcnt !== BigInt(LUO_FLB_PGCNT)) {
    throw new LuoAbiError(`${where}: pgcnt ${pgcnt} is not ${LUO_FLB_PGCNT}`);
  }
  const max = luoFlbMax(version);
  if (count > BigInt(max)) {
    throw new LuoAbiError(`${where}: count ${count} is more than the ${max} that fit`);
  }
  const flbs: LuoFlbSer[] = [];
  const names = new Set<string>();
  for (let i = 0; i < Number(count); i++) {
    const offset = luoFlbHeaderSer.size + i * flbSer(version).size;
    const entry = `${where}: luo_flb_ser[${i}]`;
    const length = strnlen(
      raw.subarray(offset, offset + LIVEUPDATE_FLB_COMPAT_LENGTH),
      LIVEUPDATE_FLB_COMPAT_LENGTH,
    );
    if (length === LIVEUPDATE_FLB_COMPAT_LENGTH) {
      throw new LuoAbiError(
        `${entry}: name has no NUL within ${LIVEUPDATE_FLB_COMPAT_LENGTH} bytes`,
      );
    }
    if (length === 0) throw new LuoAbiError(`${entry}: name is empty`);
    const flb = entryOrThrow(entry, () => decodeFlb(raw, offset, version));
    if (names.has(flb.name)) {
      throw new LuoAbiError(`${entry}: name ${JSON.stringify(flb.name)} appears twice`);
    }
    if (flb.count === 0n) throw new LuoAbiError(`${entry}: count is 0`);
    names.add(flb.name);
    flbs.push(flb);
  }
  return flbs;
}

/**
 * Write the FLB table ({@link LUO_FLB_TABLE_SIZE} bytes: header, array, zeros) at `phys`, with
 * `luo-v2` entries (their `dataSize` and `dataCrc` as given) or `luo-v1` ones. Refuses, before
 * writing a byte, what {@link readLuoFlbTable} would refuse.
 *
 * @throws LuoAbiError for more than {@link luoFlbMax} entries, an empty, too long or repeated
 *   name, a count of 0, or a range outside RAM
 */
export function writeLuoFlbTable(
  memory: PhysicalMemory,
  phys: number,
  flbs: readonly LuoFlbSer[],
  version: LuoAbiVersion = 2,
): void {
  const where = `FLB table at ${hex(phys)}`;
  const max = luoFlbMax(version);
  if (flbs.length > max) {
    throw new LuoAbiError(`${where}: ${flbs.length} FLBs, but ${max} fit`);
  }
  const out = new Uint8Array(LUO_FLB_TABLE_SIZE);
  luoFlbHeaderSer.encodeInto(out, 0, {
    pgcnt: BigInt(LUO_FLB_PGCNT),
    count: BigInt(flbs.length),
  });
  const names = new Set<string>();
  flbs.forEach((flb, i) => {
    const entry = `${where}: FLB ${i} ${JSON.stringify(flb.name)}`;
    if (flb.name === '') throw new LuoAbiError(`${entry}: name is empty`);
    if (names.has(flb.name)) throw new LuoAbiError(`${entry}: name appears twice`);
    if (flb.count === 0n) throw new LuoAbiError(`${entry}: count is 0`);
    names.add(flb.name);
    const offset = luoFlbHeaderSer.size + i * flbSer(version).size;
    encodeOrThrow(entry, () =>
      version === 2
        ? luoFlbSer.encodeInto(out, offset, { ...flb, reserved: 0 })
        : luoFlbSerV1.encodeInto(out, offset, flb),
    );
  });
  writeOrThrow(memory, phys, out, where);
}
