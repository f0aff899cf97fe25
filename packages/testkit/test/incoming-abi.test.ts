// The next kernel checks what it is handed (spec/luo-upstream.md §2.2, §12 invariant 7): a bad LUO
// root panics at boot; bad sessions or files make /dev/liveupdate EIO for good.
import { describe, expect, it } from 'vitest';
import { MachineHaltedError, type HandoverEvent, type PhysicalMemory } from '@liveupdate/machine';
import { liveUpdateImage, sealKhoHandover } from '@liveupdate/testkit';
import {
  CLAIMS_FORMATS_MODULE,
  boot,
  downgradeToLuoV1,
  luoFdtLocation,
  openDevice,
  preserveNote,
  rawLuoHandover,
  readLuoFdt,
  readNote,
  sealLuoHandover,
  liveUpdateTwoSessions,
} from './helpers.js';

/** Boot with `corrupt` run on the handover, preserve one note in session "s", and live-update. */
async function liveUpdateCorrupted(corrupt: (memory: PhysicalMemory, khoFdtPhys: number) => void) {
  const harness = await boot({
    onHandover: ({ memory, khoFdtPhys }: HandoverEvent) => corrupt(memory, khoFdtPhys!),
  });
  await preserveNote(await (await openDevice(harness.process)).createSession('s'), 1, 'data');
  const outcome = await harness.liveUpdate().catch((error: unknown) => error);
  return { harness, outcome };
}

describe('the incoming LUO data', () => {
  it('makes the new kernel panic, naming LUO, when the LUO FDT is neither luo-v2 nor luo-v1', async () => {
    const { harness, outcome } = await liveUpdateCorrupted((memory, khoFdtPhys) => {
      const { phys, size } = luoFdtLocation(memory, khoFdtPhys);
      const blob = memory.view(phys, size);
      const at = Buffer.from(blob).indexOf('luo-v2');
      blob[at + 5] = '9'.charCodeAt(0);
      // KHO's blob-crc made right again, so LUO's own check is what is tested.
      sealKhoHandover(memory, khoFdtPhys);
    });
    expect(MachineHaltedError.isInstance(outcome)).toBe(true);
    expect(harness.machine.state).toBe('halted');
    expect(harness.machine.panicReason).toMatch(
      /^LUO: .*not compatible with "luo-v2" or "luo-v1".*luo-v9/,
    );
    expect(harness.machine.dmesg(1)).toMatch(/Kernel panic - not syncing: LUO: /);
  });

  it.each([
    ['far beyond the session limit', 1_000_000n, /count 1000000 is more than the 4096 allowed/],
    ['one past the sessions written', 2n, /luo_session_ser\[1\]: name is empty/],
  ])(
    'makes every open of /dev/liveupdate EIO when the session count is %s',
    async (_what, count, logged) => {
      const { harness, outcome } = await liveUpdateCorrupted((memory, khoFdtPhys) => {
        memory.writeU64(Number(readLuoFdt(memory, khoFdtPhys).sessionHeaderPhys), count);
        // Checksums made right again, so the count check itself is what is tested.
        if (count < 4096n) sealLuoHandover(memory, khoFdtPhys);
      });
      expect(outcome).not.toBeInstanceOf(Error);
      await expect(openDevice(harness.process)).rejects.toMatchObject({ code: 'EIO' });
      await expect(openDevice(harness.process)).rejects.toMatchObject({ code: 'EIO' });
      expect(harness.machine.dmesg()).toMatch(/LUO: deserialization failed: /);
      expect(harness.machine.dmesg()).toMatch(logged);
    },
  );

  it('makes /dev/liveupdate EIO, logging the compatible, when no handler takes a file', async () => {
    const harness = await boot();
    await preserveNote(await (await openDevice(harness.process)).createSession('s'), 7, 'note');
    // The image says it reads note-v1 (so the kexec is not refused) but has no handler for it.
    const next = await harness.liveUpdate(
      liveUpdateImage({ version: '6.18.1', modules: [CLAIMS_FORMATS_MODULE] }),
    );
    await expect(openDevice(next)).rejects.toMatchObject({ code: 'EIO' });
    expect(harness.machine.dmesg()).toMatch(
      /LUO: deserialization failed: session "s" token 7: no file handler registered for compatible "note-v1"/,
    );
  });
});

/**
 * Retrieve incoming session `name` and each of `tokens` from it: the note's text or the errno;
 * then close it (which finishes it).
 */
async function notesOf(
  harness: Awaited<ReturnType<typeof boot>>,
  name: string,
  tokens: bigint[],
): Promise<string[]> {
  const device = await openDevice(harness.process);
  try {
    const session = await device.retrieveSession(name);
    const out: string[] = [];
    for (const token of tokens) {
      try {
        out.push(await readNote(harness.process, await session.retrieveFd(token)));
      } catch (error) {
        out.push((error as { code: string }).code);
      }
    }
    await session.close();
    return out;
  } finally {
    await device.close();
  }
}

describe('the integrity of the incoming LUO data (luo-v2 checksums)', () => {
  it('panics the new kernel, naming luo-flb-crc, when the FLB page does not match', async () => {
    const { harness, outcome } = await liveUpdateCorrupted((memory, khoFdtPhys) => {
      const flb = Number(readLuoFdt(memory, khoFdtPhys).flbHeaderPhys);
      memory.view(flb + 4000, 1)[0]! ^= 1;
    });
    expect(MachineHaltedError.isInstance(outcome)).toBe(true);
    expect(harness.machine.panicReason).toMatch(
      /^LUO: luo_flb_header_ser at 0x[0-9a-f]+: luo-flb-crc 0x[0-9a-f]+ does not match/,
    );
  });

  it.each([
    [
      'the session table (a renamed session)',
      'luo-session-crc',
      (memory: PhysicalMemory, khoFdtPhys: number) => {
        const { sessions } = rawLuoHandover(memory, khoFdtPhys);
        memory.view(sessions[1]!.phys, 1)[0] = 'c'.charCodeAt(0);
      },
    ],
    [
      'a file array (a changed token)',
      'files_crc',
      (memory: PhysicalMemory, khoFdtPhys: number) => {
        const { sessions } = rawLuoHandover(memory, khoFdtPhys);
        memory.writeU64(sessions[0]!.files[1]!.phys + 56, 7n);
      },
    ],
  ])(
    'makes every open of /dev/liveupdate EIO when %s does not match its checksum',
    async (_what, field, edit) => {
      const { harness, outcome } = await liveUpdateTwoSessions(edit);
      expect(outcome).not.toBeInstanceOf(Error);
      await expect(openDevice(harness.process)).rejects.toMatchObject({ code: 'EIO' });
      expect(harness.machine.dmesg()).toMatch(
        new RegExp(`LUO: deserialization failed: .*${field} 0x[0-9a-f]+ does not match`),
      );
    },
  );

  it('fails only the file, with a sticky EIO and without calling its handler, when its data does not match data_crc', async () => {
    const { harness } = await liveUpdateTwoSessions((memory, khoFdtPhys) => {
      const { sessions } = rawLuoHandover(memory, khoFdtPhys);
      const data = Number(sessions[0]!.files[0]!.entry.data);
      memory.view(data, 1)[0]! ^= 0x20; // one byte of the note's state: a value-only change
    });
    expect(await notesOf(harness, 'b', [3n])).toEqual(['three']);
    const device = await openDevice(harness.process);
    const a = await device.retrieveSession('a');
    await expect(a.retrieveFd(1n)).rejects.toMatchObject({ code: 'EIO' });
    await expect(a.retrieveFd(1n)).rejects.toMatchObject({ code: 'EIO' });
    expect(await readNote(harness.process, await a.retrieveFd(2n))).toBe('two');
    await a.finish();
    const log = harness.machine.dmesg();
    expect(log).toMatch(
      /LUO: token 1 \(note-v1\): luo_file_ser data_crc 0x[0-9a-f]+ does not match the 4096 bytes at data 0x[0-9a-f]+/,
    );
    expect(log).toMatch(
      /LUO: session "a" token 1 \(note-v1\) is damaged: note-v1's finish is not called/,
    );
  });
});

describe('the incoming LUO data built byte by byte (checksums sealed)', () => {
  it('makes every open EIO when a token appears twice in a session', async () => {
    const { harness } = await liveUpdateTwoSessions((memory, khoFdtPhys) => {
      const { sessions } = rawLuoHandover(memory, khoFdtPhys);
      memory.writeU64(sessions[0]!.files[1]!.phys + 56, 1n);
      sealLuoHandover(memory, khoFdtPhys);
    });
    await expect(openDevice(harness.process)).rejects.toMatchObject({ code: 'EIO' });
    expect(harness.machine.dmesg()).toMatch(
      /LUO: deserialization failed: .*entry 1: token 1 appears twice/,
    );
  });

  it('makes every open EIO when a session name appears twice', async () => {
    const { harness } = await liveUpdateTwoSessions((memory, khoFdtPhys) => {
      const { sessions } = rawLuoHandover(memory, khoFdtPhys);
      memory.view(sessions[1]!.phys, 1)[0] = 'a'.charCodeAt(0);
      sealLuoHandover(memory, khoFdtPhys);
    });
    await expect(openDevice(harness.process)).rejects.toMatchObject({ code: 'EIO' });
    expect(harness.machine.dmesg()).toMatch(/luo_session_ser\[1\]: name "a" appears twice/);
  });

  it.each([
    ['in the same session', 0, 1, 'a', 2n, ['EIO', 'EIO'], ['three']],
    ['in different sessions', 1, 0, 'b', 3n, ['EIO', 'two'], ['EIO']],
  ])(
    'fails both files with EIO, and only them, when two entries %s share their data',
    async (_what, session, file, name, token, inA, inB) => {
      const { harness } = await liveUpdateTwoSessions((memory, khoFdtPhys) => {
        const { sessions } = rawLuoHandover(memory, khoFdtPhys);
        const first = sessions[0]!.files[0]!.entry.data;
        memory.writeU64(sessions[session]!.files[file]!.phys + 48, first);
        sealLuoHandover(memory, khoFdtPhys);
      });
      expect(await notesOf(harness, 'a', [1n, 2n])).toEqual(inA);
      expect(await notesOf(harness, 'b', [3n])).toEqual(inB);
      expect(harness.machine.dmesg()).toMatch(
        new RegExp(
          `LUO: session "${name}" token ${token}: luo_file_ser data 0x[0-9a-f]+: is also the data of token 1`,
        ),
      );
    },
  );

  it('fails the file with EIO when data_size is not the preserved folio at data', async () => {
    const { harness } = await liveUpdateTwoSessions((memory, khoFdtPhys) => {
      const { sessions } = rawLuoHandover(memory, khoFdtPhys);
      memory.writeU64(sessions[1]!.files[0]!.phys + 64, 8192n);
      sealLuoHandover(memory, khoFdtPhys);
    });
    expect(await notesOf(harness, 'b', [3n])).toEqual(['EIO']);
    expect(await notesOf(harness, 'a', [1n, 2n])).toEqual(['one', 'two']);
    expect(harness.machine.dmesg()).toMatch(
      /data_size 8192 is not the size of a preserved folio starting there/,
    );
  });

  it('makes every open EIO when a file array is not a preserved allocation', async () => {
    const { harness } = await liveUpdateTwoSessions((memory, khoFdtPhys) => {
      const { sessions } = rawLuoHandover(memory, khoFdtPhys);
      // The array moved to the middle of its own folio: in RAM, but not what LUO allocated.
      const files = Number(sessions[1]!.entry.files);
      memory.write(files + 1024, memory.read(files, 80));
      memory.writeU64(sessions[1]!.phys + 64, BigInt(files + 1024));
      sealLuoHandover(memory, khoFdtPhys);
    });
    await expect(openDevice(harness.process)).rejects.toMatchObject({ code: 'EIO' });
    expect(harness.machine.dmesg()).toMatch(
      /session "b": luo_file_ser\[1\] at 0x[0-9a-f]+: 0x[0-9a-f]+ is not a preserved allocation of 80 bytes/,
    );
  });

  it('panics the new kernel, naming LUO, when the LUO subtree lost its name to damage', async () => {
    const { harness, outcome } = await liveUpdateCorrupted((memory, khoFdtPhys) => {
      const bytes = memory.view(khoFdtPhys, 4096);
      const at = Buffer.from(bytes).indexOf('LUO\0');
      bytes[at + 1] = 'V'.charCodeAt(0); // still a valid subtree name
      sealKhoHandover(memory, khoFdtPhys);
    });
    expect(MachineHaltedError.isInstance(outcome)).toBe(true);
    expect(harness.machine.panicReason).toMatch(
      /^LUO: the KHO subtree "LUO" is missing, but subtree "LVO" holds a LUO FDT \(compatible \["luo-v2"\]\)/,
    );
  });
});

describe('an update from a kernel that writes luo-v1', () => {
  it('retrieves every session and file of a luo-v1 handover, and says it carries no checksums', async () => {
    const { harness, outcome } = await liveUpdateTwoSessions(downgradeToLuoV1);
    expect(outcome).not.toBeInstanceOf(Error);
    expect(await notesOf(harness, 'a', [1n, 2n])).toEqual(['one', 'two']);
    expect(await notesOf(harness, 'b', [3n])).toEqual(['three']);
    const log = harness.machine.dmesg();
    expect(log).toMatch(/LUO: the incoming handover is luo-v1: it carries no checksums/);
    expect(log).toMatch(/LUO: deserialized 2 incoming sessions \(luo-v1\)/);
  });
});
