/**
 * The LUO handover ABI, `luo-v1` (the document's FDT layout, `include/linux/kho/abi/luo.h` of
 * G1): everything one kernel hands the next, as bytes at physical addresses. Integers are
 * little-endian, structs packed.
 *
 * ```
 * KHO subtree "LUO" → FDT
 * / {
 *     compatible = "luo-v1";
 *     liveupdate-number = <u64>;            // native-endian (little-endian)
 *     luo-session {
 *         compatible = "luo-session-v1";
 *         luo-session-header = <u64>;       // phys of luo_session_header_ser
 *     };
 * };
 * luo_session_header_ser { count }, then luo_session_ser[count]
 *     luo_session_ser.files → luo_file_ser[luo_session_ser.count]
 *         luo_file_ser.data → the handler's own preserved data
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
  readU64,
  type FdtNode,
} from '@liveupdate/fdt';
import { hex, type PhysicalMemory } from '@liveupdate/machine';
import { LIVEUPDATE_HNDL_COMPAT_LENGTH } from './file-handler.js';
import { LIVEUPDATE_SESSION_NAME_LENGTH } from './liveupdate-uapi.js';
import { cstring, defineStruct, strnlen, u64, type StructCodec } from './struct-codec.js';

/** Name of LUO's KHO subtree (`LUO_FDT_KHO_ENTRY_NAME`). */
export const LUO_FDT_KHO_ENTRY_NAME = 'LUO';
/** `compatible` of the LUO FDT's root: the version of the whole ABI. */
export const LUO_FDT_COMPATIBLE = 'luo-v1';
/** Root property: the number of live updates so far, a native-endian u64. */
export const LUO_FDT_LIVEUPDATE_NUM = 'liveupdate-number';
/** The node describing the sessions. */
export const LUO_FDT_SESSION_NODE_NAME = 'luo-session';
/** `compatible` of the session node: the version of the session and file structs below. */
export const LUO_FDT_SESSION_COMPATIBLE = 'luo-session-v1';
/** Session node property: physical address of `luo_session_header_ser`, a native-endian u64. */
export const LUO_FDT_SESSION_HEADER = 'luo-session-header';

/** `struct luo_session_header_ser`: heads the session array. */
export interface LuoSessionHeaderSer {
  /** Number of `luo_session_ser` entries right after the header. */
  count: bigint;
}

/** `struct luo_session_ser`, with its embedded `struct luo_file_set_ser` flattened. */
export interface LuoSessionSer {
  /** The session's name, 1..63 bytes of UTF-8. */
  name: string;
  /** `file_set_ser.files`: physical address of the session's `luo_file_ser[]`, 0 if none. */
  files: bigint;
  /** `file_set_ser.count`: number of files. */
  count: bigint;
}

/** `struct luo_file_ser`: one preserved file. */
export interface LuoFileSer {
  /** The compatible string of the handler that preserved the file. */
  compatible: string;
  /** The handler's handle to its preserved data (`serialized_data`). */
  data: bigint;
  /** The user's token for the file. */
  token: bigint;
}

/** `struct luo_session_header_ser` (8 bytes): `count` u64 @0. */
export const luoSessionHeaderSer: StructCodec<LuoSessionHeaderSer> = defineStruct(
  'luo_session_header_ser',
  [['count', u64]] as const,
);

/**
 * `struct luo_session_ser` (80 bytes): `name` char[64] @0, `file_set_ser.files` u64 @64,
 * `file_set_ser.count` u64 @72.
 */
export const luoSessionSer: StructCodec<LuoSessionSer> = defineStruct('luo_session_ser', [
  ['name', cstring(LIVEUPDATE_SESSION_NAME_LENGTH)],
  ['files', u64],
  ['count', u64],
] as const);

/** `struct luo_file_ser` (64 bytes): `compatible` char[48] @0, `data` u64 @48, `token` u64 @56. */
export const luoFileSer: StructCodec<LuoFileSer> = defineStruct('luo_file_ser', [
  ['compatible', cstring(LIVEUPDATE_HNDL_COMPAT_LENGTH)],
  ['data', u64],
  ['token', u64],
] as const);

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
  /** `liveupdate-number`: live updates so far, counting the one this FDT was written for. */
  liveupdateNumber: bigint;
  /** `luo-session/luo-session-header`: physical address of `luo_session_header_ser`. */
  sessionHeaderPhys: bigint;
}

const NATIVE_ENDIAN = { littleEndian: true };

/** Build the LUO FDT blob (DTB v17) for KHO's `LUO` subtree. */
export function encodeLuoFdt(fdt: LuoFdt): Uint8Array {
  return encodeFdt(
    fdtNode(
      '',
      {
        compatible: fdtValue.string(LUO_FDT_COMPATIBLE),
        [LUO_FDT_LIVEUPDATE_NUM]: fdtValue.u64(fdt.liveupdateNumber, NATIVE_ENDIAN),
      },
      [
        fdtNode(LUO_FDT_SESSION_NODE_NAME, {
          compatible: fdtValue.string(LUO_FDT_SESSION_COMPATIBLE),
          [LUO_FDT_SESSION_HEADER]: fdtValue.u64(fdt.sessionHeaderPhys, NATIVE_ENDIAN),
        }),
      ],
    ),
  );
}

/**
 * Read the LUO FDT of the previous kernel. Like `fdt_node_check_compatible()`, a node is
 * compatible when its `compatible` list holds the expected string.
 *
 * @throws LuoAbiError when the blob is not a valid FDT, a node or property is missing, a
 *   `compatible` is not ours, or a u64 property is not 8 bytes
 */
export function decodeLuoFdt(blob: Uint8Array): LuoFdt {
  const root = fdtOrThrow('LUO FDT is not a valid FDT', () => decodeFdt(blob).root);
  checkCompatible(root, '/', LUO_FDT_COMPATIBLE);
  const liveupdateNumber = fdtOrThrow('LUO FDT', () =>
    readU64(root, LUO_FDT_LIVEUPDATE_NUM, NATIVE_ENDIAN),
  );
  const path = `/${LUO_FDT_SESSION_NODE_NAME}`;
  const sessionNode = findNode(root, path);
  if (sessionNode === undefined) throw new LuoAbiError(`LUO FDT has no node ${path}`);
  checkCompatible(sessionNode, path, LUO_FDT_SESSION_COMPATIBLE);
  const sessionHeaderPhys = fdtOrThrow('LUO FDT', () =>
    readU64(sessionNode, LUO_FDT_SESSION_HEADER, NATIVE_ENDIAN),
  );
  return { liveupdateNumber, sessionHeaderPhys };
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
export function luoSessionTableSize(n: number): number {
  return luoSessionHeaderSer.size + n * luoSessionSer.size;
}

/** Bytes of a file table of `n` files. */
export function luoFileTableSize(n: number): number {
  return n * luoFileSer.size;
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
): LuoSessionSer[] {
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
  const arraySize = n * luoSessionSer.size;
  if (!memory.contains(arrayPhys, arraySize)) {
    throw new LuoAbiError(`${where}: its ${n} luo_session_ser entries run outside RAM`);
  }
  // One copy, so every check and the values returned see the same bytes.
  const raw = memory.read(arrayPhys, arraySize);
  const sessions: LuoSessionSer[] = [];
  const names = new Set<string>();
  for (let i = 0; i < n; i++) {
    const offset = i * luoSessionSer.size;
    const entry = `${where}: luo_session_ser[${i}]`;
    const nameField = raw.subarray(offset, offset + LIVEUPDATE_SESSION_NAME_LENGTH);
    const length = strnlen(nameField, LIVEUPDATE_SESSION_NAME_LENGTH);
    if (length === LIVEUPDATE_SESSION_NAME_LENGTH) {
      throw new LuoAbiError(
        `${entry}: name has no NUL within ${LIVEUPDATE_SESSION_NAME_LENGTH} bytes`,
      );
    }
    if (length === 0) throw new LuoAbiError(`${entry}: name is empty`);
    const session = luoSessionSer.decode(raw, offset);
    if (names.has(session.name)) {
      throw new LuoAbiError(`${entry}: name ${JSON.stringify(session.name)} appears twice`);
    }
    names.add(session.name);
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
): LuoFileSer[] {
  const where = `luo_file_ser[${count}] at ${hex(filesPhys)}`;
  if (!Number.isSafeInteger(count) || count < 0 || count > maxFiles) {
    throw new LuoAbiError(`${where}: count ${count} is not in 0..${maxFiles}`);
  }
  if (count === 0) return [];
  const arraySize = luoFileTableSize(count);
  if (filesPhys === 0 || !memory.contains(filesPhys, arraySize)) {
    throw new LuoAbiError(`${where} is outside RAM`);
  }
  const raw = memory.read(filesPhys, arraySize);
  const files: LuoFileSer[] = [];
  const tokens = new Set<bigint>();
  for (let i = 0; i < count; i++) {
    const offset = i * luoFileSer.size;
    const entry = `${where}: entry ${i}`;
    const compatibleField = raw.subarray(offset, offset + LIVEUPDATE_HNDL_COMPAT_LENGTH);
    const length = strnlen(compatibleField, LIVEUPDATE_HNDL_COMPAT_LENGTH);
    if (length === LIVEUPDATE_HNDL_COMPAT_LENGTH) {
      throw new LuoAbiError(
        `${entry}: compatible has no NUL within ${LIVEUPDATE_HNDL_COMPAT_LENGTH} bytes`,
      );
    }
    if (length === 0) throw new LuoAbiError(`${entry}: compatible is empty`);
    const file = luoFileSer.decode(raw, offset);
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
): void {
  const where = `session table at ${hex(phys)}`;
  const out = new Uint8Array(luoSessionTableSize(sessions.length));
  luoSessionHeaderSer.encodeInto(out, 0, { count: BigInt(sessions.length) });
  const names = new Set<string>();
  sessions.forEach((session, i) => {
    const entry = `${where}: session ${i} ${JSON.stringify(session.name)}`;
    if (session.name === '') throw new LuoAbiError(`${entry}: name is empty`);
    if (names.has(session.name)) throw new LuoAbiError(`${entry}: name appears twice`);
    names.add(session.name);
    encodeOrThrow(entry, () =>
      luoSessionSer.encodeInto(out, luoSessionHeaderSer.size + i * luoSessionSer.size, session),
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
): void {
  const where = `file table at ${hex(phys)}`;
  const out = new Uint8Array(luoFileTableSize(files.length));
  const tokens = new Set<bigint>();
  files.forEach((file, i) => {
    const entry = `${where}: file ${i} (token ${file.token})`;
    if (file.compatible === '') throw new LuoAbiError(`${entry}: compatible is empty`);
    if (tokens.has(file.token)) throw new LuoAbiError(`${entry}: token appears twice`);
    tokens.add(file.token);
    encodeOrThrow(entry, () => luoFileSer.encodeInto(out, i * luoFileSer.size, file));
  });
  writeOrThrow(memory, phys, out, where);
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
