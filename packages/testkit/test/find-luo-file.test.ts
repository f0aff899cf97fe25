// findLuoFile, as a handler author uses it from onHandover: find one file's serialized state by
// session and token, damage exactly that, reseal, and see what the next kernel does with it — in
// a luo-v2 handover and in a luo-v1 one.
import { describe, expect, it } from 'vitest';
import { PAGE_SIZE, type PhysicalMemory } from '@liveupdate/machine';
import { findLuoFile, type LuoHandoverFile } from '@liveupdate/testkit';
import {
  downgradeToLuoV1,
  liveUpdateTwoSessions,
  openDevice,
  readNote,
  sealLuoHandover,
} from './helpers.js';

/** A note's text as its page holds it: u32 length, then the bytes (fixtures/note-module.js). */
function noteText(memory: PhysicalMemory, phys: number): string {
  return new TextDecoder().decode(memory.read(phys + 4, memory.readU32(phys)));
}

/**
 * Preserve notes "one" (token 1) and "two" (token 2) in session "a" and "three" (token 3) in
 * "b", run `edit` on the handover, live-update, and read every note back (its text or errno).
 */
async function liveUpdateNotes(edit: (memory: PhysicalMemory, khoFdtPhys: number) => void) {
  const { harness, outcome } = await liveUpdateTwoSessions(edit);
  if (outcome instanceof Error) throw outcome;
  const next = await openDevice(harness.process);
  const notes: string[] = [];
  for (const [name, tokens] of [
    ['a', [1n, 2n]],
    ['b', [3n]],
  ] as const) {
    const session = await next.retrieveSession(name);
    for (const token of tokens) {
      notes.push(
        await session
          .retrieveFd(token)
          .then((fd) => readNote(harness.process, fd))
          .catch((error: { code: string }) => error.code),
      );
    }
    await session.close();
  }
  return { harness, notes };
}

/** Overwrite the start of the note whose page is at `found.data`: same length, other text. */
function damageNote(memory: PhysicalMemory, found: LuoHandoverFile): void {
  memory.write(Number(found.data) + 4, new TextEncoder().encode('TWO'));
}

describe('findLuoFile', () => {
  it('finds a file by session and token in a luo-v2 handover: its entry, state and size', async () => {
    let found: LuoHandoverFile | undefined;
    let text = '';
    await liveUpdateNotes((memory, khoFdtPhys) => {
      found = findLuoFile(memory, khoFdtPhys, 'b', 3n);
      text = noteText(memory, Number(found.data));
    });
    expect(found!.version).toBe(2);
    expect(text).toBe('three');
    // The note handler hands over its one page, which LUO's data_size covers.
    expect(found!.dataSize).toBe(PAGE_SIZE);
    expect(found!.entry.token).toBe(3n);
    expect(found!.entry.compatible).toBe('note-v1');
    expect(new TextDecoder().decode(found!.session.entry.name)).toBe('b');
    expect(found!.session.files.map((f) => f.phys)).toContain(found!.phys);
  });

  it('lets a test damage exactly one file and reseal: only that file changes', async () => {
    const { notes } = await liveUpdateNotes((memory, khoFdtPhys) => {
      damageNote(memory, findLuoFile(memory, khoFdtPhys, 'a', 2));
      sealLuoHandover(memory, khoFdtPhys);
    });
    expect(notes).toEqual(['one', 'TWO', 'three']);
  });

  it('leaves LUO to refuse the damage when the test does not reseal', async () => {
    const { harness, notes } = await liveUpdateNotes((memory, khoFdtPhys) =>
      damageNote(memory, findLuoFile(memory, khoFdtPhys, 'a', 2)),
    );
    // LUO's data_crc catches it, and fails that file alone.
    expect(notes).toEqual(['one', 'EIO', 'three']);
    expect(harness.machine.dmesg()).toMatch(/token 2 \(note-v1\): luo_file_ser data_crc/);
  });

  it('finds a file of a luo-v1 handover, which records no size, and reseals nothing there', async () => {
    let found: LuoHandoverFile | undefined;
    let other = '';
    const { notes } = await liveUpdateNotes((memory, khoFdtPhys) => {
      downgradeToLuoV1(memory, khoFdtPhys);
      found = findLuoFile(memory, khoFdtPhys, 'a', 2n);
      damageNote(memory, found);
      sealLuoHandover(memory, khoFdtPhys);
      // Read with v1's smaller entries, the second session is where it is too.
      other = noteText(memory, Number(findLuoFile(memory, khoFdtPhys, 'b', 3n).data));
    });
    expect(other).toBe('three');
    expect(found!.version).toBe(1);
    expect(found!.dataSize).toBeNull();
    expect(found!.entry.token).toBe(2n);
    expect(notes).toEqual(['one', 'TWO', 'three']);
  });

  it('names the session or token it cannot find, and what the handover holds', async () => {
    const errors: unknown[] = [];
    await liveUpdateNotes((memory, khoFdtPhys) => {
      for (const [session, token] of [
        ['c', 1n],
        ['a', 3n],
      ] as const) {
        try {
          findLuoFile(memory, khoFdtPhys, session, token);
        } catch (error) {
          errors.push(error);
        }
      }
    });
    expect(errors.map((e) => (e as Error).message)).toEqual([
      'findLuoFile: the handover has no session "c" (it has "a", "b")',
      'findLuoFile: session "a" has no file with token 3 (its tokens: 1, 2)',
    ]);
  });
});
