import { afterEach } from 'vitest';
import { LiveUpdateDevice, type LiveUpdateSession } from '@liveupdate/core';
import { O_RDWR, type HandoverEvent, type PhysicalMemory, type Process } from '@liveupdate/machine';
import {
  bootForLiveUpdate,
  type BootForLiveUpdateOptions,
  type ConformanceOptions,
  type LiveUpdateHarness,
} from '@liveupdate/testkit';

export {
  downgradeToLuoV1,
  luoFdtLocation,
  rawLuoHandover,
  readLuoFdt,
  sealLuoHandover,
  type RawLuoFlb,
  type RawLuoSession,
} from '@liveupdate/testkit';
import { within } from '@liveupdate/vitest-config/wait-until';

export const NOTE_MODULE = new URL('./fixtures/note-module.js', import.meta.url).href;
/** A char device, /dev/cell, whose handler carries each file's open flags; see fixtures/cell-module.js. */
export const CELL_MODULE = new URL('./fixtures/cell-module.js', import.meta.url).href;
/** Says in its image note that it reads the note and item formats, and registers nothing (a lying build). */
export const CLAIMS_FORMATS_MODULE = new URL('./fixtures/claims-formats-module.js', import.meta.url)
  .href;
/** The red and blue items and their FLBs; see fixtures/flb-module.js. */
export const FLB_MODULE = new URL('./fixtures/flb-module.js', import.meta.url).href;
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
  /** Every note frozen sets its serializedData to that of the note with this text. */
  freezeDataAs?: string | null;
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

export { within };

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

/** A new red or blue item holding `text`, depending on the item at `depFd` if given; its fd. */
export async function createItem(
  process: Process,
  kind: 'red' | 'blue',
  text: string,
  depFd?: number,
): Promise<number> {
  const args = depFd === undefined ? [kind, text] : [kind, text, depFd];
  return (await process.syscall('item_create', ...args)) as number;
}

/** Create an item and preserve it under `token`; closes its fd. */
export async function preserveItem(
  session: LiveUpdateSession,
  token: bigint,
  kind: 'red' | 'blue',
  text: string,
): Promise<void> {
  const fd = await createItem(session.process, kind, text);
  await session.preserveFd(fd, token);
  await session.process.close(fd);
}

/**
 * Two sessions, "a" (notes 1 and 2) and "b" (note 3); `edit` changes the handover on its way,
 * and the new kernel boots from it.
 */
export async function liveUpdateTwoSessions(
  edit: (memory: PhysicalMemory, khoFdtPhys: number) => void,
) {
  const harness = await boot({
    onHandover: ({ memory, khoFdtPhys }: HandoverEvent) => edit(memory, khoFdtPhys!),
  });
  const device = await openDevice(harness.process);
  const a = await device.createSession('a');
  await preserveNote(a, 1, 'one');
  await preserveNote(a, 2, 'two');
  await preserveNote(await device.createSession('b'), 3, 'three');
  const outcome = await harness.liveUpdate().catch((error: unknown) => error);
  return { harness, outcome };
}
