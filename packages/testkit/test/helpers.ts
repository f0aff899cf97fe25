import { afterEach } from 'vitest';
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
  LiveUpdateDevice,
  decodeLuoFdt,
  encodeLuoFdt,
  luoFileSer,
  luoFileSerV1,
  luoSessionHeaderSer,
  luoSessionSer,
  luoSessionSerV1,
  type LiveUpdateSession,
  type LuoFdt,
} from '@liveupdate/core';
import { crc32c } from '@liveupdate/kernel';
import { O_RDWR, type PhysicalMemory, type Process } from '@liveupdate/machine';
import {
  bootForLiveUpdate,
  type BootForLiveUpdateOptions,
  type ConformanceOptions,
  type LiveUpdateHarness,
} from '@liveupdate/testkit';

export const NOTE_MODULE = new URL('./fixtures/note-module.js', import.meta.url).href;
export const CHEAT_MODULE = new URL('./fixtures/cheat-module.js', import.meta.url).href;
export const REGISTRATION_PROBE_MODULE = new URL(
  './fixtures/registration-probe-module.js',
  import.meta.url,
).href;

/** Small RAM keeps poisoning at every boot cheap. */
export const TEST_RAM = 32 * 1024 * 1024;

const harnesses: LiveUpdateHarness[] = [];
afterEach(async () => {
  await Promise.all(harnesses.splice(0).map((h) => h.shutdown()));
});

/** A LUO machine with the note handler (unless `modules` says otherwise), shut down after the test. */
export async function boot(
  options: Partial<BootForLiveUpdateOptions> = {},
): Promise<LiveUpdateHarness> {
  const harness = await bootForLiveUpdate({
    modules: [NOTE_MODULE],
    ramBytes: TEST_RAM,
    ...options,
  });
  harnesses.push(harness);
  return harness;
}

/** Knobs of the note handler; see fixtures/note-module.js. */
export interface NoteKnobs {
  failFreeze?: string | null;
  throwPlain?: string | null;
  refuseFinish?: boolean;
  forgetPreserve?: boolean;
  globalState?: boolean;
  /** The op that waits, once called, until {@link openNoteGate}. */
  gate?: 'unpreserve' | 'freeze' | 'retrieve' | null;
}

/** A new note holding `text`; returns its fd. */
export async function createNote(process: Process, text: string): Promise<number> {
  return (await process.syscall('note_create', text)) as number;
}

/** Set knobs of the note handler in the running kernel; returns the handler calls since last time. */
export async function noteControl(process: Process, knobs: NoteKnobs = {}): Promise<string[]> {
  return ((await process.syscall('note_control', knobs)) as { calls: string[] }).calls;
}

/** The handler calls recorded since the last look. */
export function noteCalls(process: Process): Promise<string[]> {
  return noteControl(process);
}

/** The text of the note open at `fd`. */
export async function readNote(process: Process, fd: number): Promise<string> {
  return new TextDecoder().decode(await process.pread(fd, 4096, 0));
}

/** Create a note with `text` and preserve it in `session` under `token`; closes the note's fd. */
export async function preserveNote(
  session: LiveUpdateSession,
  token: bigint | number,
  text: string,
): Promise<void> {
  const fd = await createNote(session.process, text);
  await session.preserveFd(fd, token);
  await session.process.close(fd);
}

/**
 * The conformance options of the note handler, as an author would write them; a `note.bug=`
 * command line turns one of the fixture's bugs on (see fixtures/note-module.js).
 */
export const noteConformance: ConformanceOptions = {
  name: 'note-v1 conformance',
  handlerCompatible: 'note-v1',
  modules: [NOTE_MODULE],
  ramBytes: TEST_RAM,
  createFile: (process) => createNote(process, 'a note to keep'),
  readContent: readNote,
  async mutate(process, fd) {
    await process.pwrite(fd, new TextEncoder().encode('A NOTE'), 0);
  },
};

/**
 * The conformance options of the cheating handler (fixtures/cheat-module.js): honest as they
 * are; a `cheat.via=` command line makes it keep its text outside preserved memory.
 */
export const cheatConformance: ConformanceOptions = {
  name: 'cheat-v1 conformance',
  handlerCompatible: 'cheat-v1',
  modules: [CHEAT_MODULE],
  ramBytes: TEST_RAM,
  createFile: async (process) =>
    (await process.syscall('cheat_create', 'kept honestly?')) as number,
  readContent: readNote,
};

/** Open `/dev/liveupdate` in `process`. */
export function openDevice(process: Process): Promise<LiveUpdateDevice> {
  return LiveUpdateDevice.open(process);
}

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

/** Run `fn` on every item, `width` at a time. */
export async function inBatches<T>(
  items: readonly T[],
  width: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  for (let i = 0; i < items.length; i += width) {
    await Promise.all(items.slice(i, i + width).map(fn));
  }
}

/**
 * `promise`, or a rejection "timed out waiting for `what`" after `ms` (generous: the bound is
 * there to name what never came, not to pace the test).
 */
export async function within<T>(promise: Promise<T>, what: string, ms = 20_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves once a note op waits at the gate set with `noteControl({ gate })`. */
export async function noteGateArrived(process: Process): Promise<void> {
  await within(process.syscall('note_gate', 'arrived'), 'a note op to wait at the gate');
}

/** Let the note op waiting at the gate, and every later one, go on. */
export async function openNoteGate(process: Process): Promise<void> {
  await process.syscall('note_gate', 'open');
}

/** Fill `process`'s fd table with dups of /dev/null; returns one of them, to close for room. */
export async function fillFdTable(process: Process): Promise<number> {
  const devNull = await process.open('/dev/null', O_RDWR);
  for (;;) {
    try {
      await process.dup(devNull);
    } catch (error) {
      if ((error as { code?: string }).code === 'EMFILE') return devNull;
      throw error;
    }
  }
}

/** A raw `luo-v2` session entry and its raw file entries, as the bytes say (nothing validated). */
export interface RawLuoSession {
  readonly phys: number;
  readonly entry: ReturnType<typeof luoSessionSer.decode>;
  readonly files: { phys: number; entry: ReturnType<typeof luoFileSer.decode> }[];
}

/**
 * The `luo-v2` handover's sessions and files as raw entries with their addresses, read with the
 * codecs alone, so a test can edit bytes the reader would refuse and then {@link sealLuoHandover}.
 */
export function rawLuoHandover(
  memory: PhysicalMemory,
  khoFdtPhys: number,
): { fdt: LuoFdt; sessions: RawLuoSession[] } {
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
  return { fdt, sessions };
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
