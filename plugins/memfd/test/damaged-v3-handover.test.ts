// memfd-v3 handovers damaged field by field between two kernels, through LUO: each value its
// writer cannot produce fails that file alone with the documented errno and a log line naming the
// field, the other files come back intact, and nothing of the damaged file is restored.
import { errnoOf, rawLuoHandover } from '@liveupdate/testkit';
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { crc32c } from '@liveupdate/kernel';
import { PAGE_SIZE, hex, type PhysicalMemory } from '@liveupdate/machine';
import { memfdLuoRunSer, memfdLuoSerV3 } from '@liveupdate/plugin-memfd';
import {
  MEMFD_MODULE,
  MiB,
  TEST_RAM,
  expectBytes,
  frameCount,
  liveUpdateDamaged,
  readAll,
  stats,
} from './helpers.js';

type MemfdLuoSerV3 = ReturnType<typeof memfdLuoSerV3.decode>;
type MemfdLuoRunSer = ReturnType<typeof memfdLuoRunSer.decode>;

/** Where the victim's handover lies: its memfd_luo_ser and the page of its run array. */
interface Victim {
  readonly ser: number;
  readonly array: number;
}

/** The victim's memfd_luo_ser and runs, to change; written back (and resealed) afterwards. */
interface Editable {
  ser: MemfdLuoSerV3;
  runs: MemfdLuoRunSer[];
  readonly serPhys: number;
  readonly array: number;
  readonly arrayFolio: number;
}

/** Session "vm0" token `token` (the victim: 1) of the handover, found with the testkit's raw reader. */
function locate(memory: PhysicalMemory, khoFdtPhys: number, token = 1n): Victim {
  const vm0 = rawLuoHandover(memory, khoFdtPhys).sessions.find(
    (s) => new TextDecoder().decode(s.entry.name).replace(/\0+$/, '') === 'vm0',
  );
  const file = vm0?.files.find((f) => f.entry.token === token);
  if (!file) throw new Error(`no vm0 token ${token} in the handover`);
  expect(file.entry.compatible).toBe('memfd-v3');
  const ser = Number(file.entry.data);
  const { runs } = memfdLuoSerV3.decode(memory.read(ser, memfdLuoSerV3.size));
  // kho_vmalloc_chunk: phys[0], the one array page, at offset 8.
  return { ser, array: Number(memory.readU64(Number(runs.first) + 8)) };
}

type Damage = (edit: Editable) => void;

/** The memfd_luo_ser and runs of `victim`, to edit and {@link writeBack}. */
function editable(memory: PhysicalMemory, victim: Victim): Editable {
  const ser = memfdLuoSerV3.decode(memory.read(victim.ser, memfdLuoSerV3.size));
  const runs = Array.from({ length: Number(ser.nrRuns) }, (_, i) =>
    memfdLuoRunSer.decode(memory.read(victim.array + i * memfdLuoRunSer.size, memfdLuoRunSer.size)),
  );
  return {
    ser,
    runs,
    serPhys: victim.ser,
    array: victim.array,
    arrayFolio: victim.array / PAGE_SIZE,
  };
}

/**
 * Write `edit` back as raw bytes; with `reseal`, make `runs_crc` the checksum of the `nr_runs`
 * entries now in the array (when they fit in its page), so memfd's other checks are tested.
 */
function writeBack(memory: PhysicalMemory, edit: Editable, reseal: boolean): void {
  edit.runs.forEach((run, i) =>
    memory.write(edit.array + i * memfdLuoRunSer.size, memfdLuoRunSer.encode(run)),
  );
  const used = Number(edit.ser.nrRuns) * memfdLuoRunSer.size;
  if (reseal && used <= PAGE_SIZE) edit.ser.runsCrc = crc32c(memory.read(edit.array, used));
  memory.write(edit.serPhys, memfdLuoSerV3.encode(edit.ser));
}

/** Apply `damage` to the victim's memfd_luo_ser and run array, as raw bytes, resealed. */
function damageVictim(memory: PhysicalMemory, victim: Victim, damage: Damage): void {
  const edit = editable(memory, victim);
  damage(edit);
  writeBack(memory, edit, true);
}

/**
 * Three memfds, the victim of 8 MiB + 3 pages (four order-9 folios in one run, then order 1 and
 * order 0), in memfd-v3; `damage` edits the victim's handover.
 */
async function liveUpdateDamagedV3(damage: Damage) {
  const result = await liveUpdateDamaged({
    memfd: MEMFD_MODULE,
    victimSize: 8 * MiB + 3 * PAGE_SIZE,
    damage: ({ memory, khoFdtPhys }) => damageVictim(memory, locate(memory, khoFdtPhys!), damage),
  });
  expect(result.victim.folios.map((f) => f.order)).toEqual([9, 9, 9, 9, 1, 0]);
  return result;
}

/** Frames of one memfd's handover besides its folios: memfd_luo_ser, chunk, array page. */
const HANDOVER_FRAMES = 3;
const RAM_FRAMES = TEST_RAM / PAGE_SIZE;

describe('a memfd-v3 handover its writer cannot have written', () => {
  it.each<[string, 'EINVAL' | 'EIO', RegExp, Damage]>([
    [
      'a run count of 0 for a non-empty file',
      'EINVAL',
      /memfd_luo_ser at 0x[0-9a-f]+: nr_runs 0 for size 8400896 \(2051 pages\)/,
      (at) => void (at.ser.nrRuns = 0n),
    ],
    [
      'a run count above the pages of the file',
      'EINVAL',
      /memfd_luo_ser at 0x[0-9a-f]+: nr_runs 2052 for size 8400896 \(2051 pages\)/,
      (at) => void (at.ser.nrRuns = 2052n),
    ],
    [
      'a run array description with more pages than the runs need',
      'EINVAL',
      /runs \(total_pages 2, flags 0x1, order 0\) is not the array of 3 entries \(1 pages/,
      (at) => void (at.ser.runs.totalPages = 2),
    ],
    [
      'reserved bits after runs_crc',
      'EINVAL',
      /memfd_luo_ser at 0x[0-9a-f]+: reserved 0x8 is not 0/,
      (at) => void (at.ser.reserved = 8),
    ],
    [
      'a size beyond RAM',
      'EINVAL',
      /memfd_luo_ser at 0x[0-9a-f]+: size 1099511627776 is more than the 32768 pages/,
      (at) => void (at.ser.size = 1n << 40n),
    ],
    [
      'a position beyond any offset',
      'EINVAL',
      /memfd_luo_ser at 0x[0-9a-f]+: pos 1152921504606846976 is beyond any offset/,
      (at) => void (at.ser.pos = 1n << 60n),
    ],
    [
      'one run more than the array holds',
      'EIO',
      /memfd_luo_run_ser\[3\]: flags 0x0, not DIRTY\|UPTODATE \(0x3\)/,
      (at) => void (at.ser.nrRuns = 4n),
    ],
    [
      'a run with an unknown flag',
      'EIO',
      /memfd_luo_run_ser\[1\]: flags 0x7, not DIRTY\|UPTODATE \(0x3\)/,
      (at) => void (at.runs[1]!.flags = 7),
    ],
    [
      'a run without UPTODATE',
      'EIO',
      /memfd_luo_run_ser\[0\]: flags 0x1, not DIRTY\|UPTODATE \(0x3\)/,
      (at) => void (at.runs[0]!.flags = 1),
    ],
    [
      'a run of no folios',
      'EIO',
      /memfd_luo_run_ser\[1\]: nr_folios 0/,
      (at) => void (at.runs[1]!.nrFolios = 0),
    ],
    [
      'an order above MAX_PAGE_ORDER',
      'EIO',
      /memfd_luo_run_ser\[0\]: order 11 is above MAX_PAGE_ORDER 10/,
      (at) => void (at.runs[0]!.order = 11),
    ],
    [
      'a first run that is not at page 0',
      'EIO',
      /memfd_luo_run_ser\[0\]: index 1: the first folio must be at page 0/,
      (at) => void (at.runs[0]!.index = 1n),
    ],
    [
      'a run that overlaps the one before',
      'EIO',
      /memfd_luo_run_ser\[1\]: index 2046: the previous entry ends at page 2048/,
      (at) => void (at.runs[1]!.index -= 2n),
    ],
    [
      'runs out of order',
      'EIO',
      /memfd_luo_run_ser\[1\]: index 2050: the previous entry ends at page 2048/,
      (at) => {
        const [first, second, third] = at.runs as [MemfdLuoRunSer, MemfdLuoRunSer, MemfdLuoRunSer];
        at.runs = [first, third, second];
      },
    ],
    [
      'a size one page larger than the runs cover',
      'EIO',
      /memfd_luo_run_ser\[2\]: the entries end at page 2051, not at the file's end 2052/,
      (at) => void (at.ser.size += BigInt(PAGE_SIZE)),
    ],
    [
      'a size whose end cuts the last run',
      'EIO',
      /memfd_luo_run_ser\[1\]: index 2048 \+ 2 pages crosses the end of the file \(page 2049\)/,
      (at) => void (at.ser.size -= BigInt(2 * PAGE_SIZE)),
    ],
    [
      'a run index not aligned to its order',
      'EIO',
      /memfd_luo_run_ser\[2\]: index 2050 is not aligned to order 2/,
      (at) => void (at.runs[2]!.order = 2),
    ],
    [
      'folios of another order than KHO preserved',
      'EIO',
      /memfd_luo_run_ser\[0\]: pfn 0x[0-9a-f]+ order 8 was preserved with order 9/,
      (at) => {
        // Eight order-8 folios where the writer made four order-9 ones: KHO says order 9.
        at.runs[0]!.order = 8;
        at.runs[0]!.nrFolios = 8;
      },
    ],
    [
      'a pfn not aligned to its order',
      'EIO',
      /memfd_luo_run_ser\[0\]: pfn 0x[0-9a-f]+ is not an order-9 folio: not aligned/,
      (at) => void (at.runs[0]!.pfn += 1n),
    ],
    [
      'a run that crosses the end of RAM',
      'EIO',
      /memfd_luo_run_ser\[0\]: pfn 0x7c00 \+ 2048 frames crosses the end of RAM \(32768 frames\)/,
      (at) => void (at.runs[0]!.pfn = BigInt(RAM_FRAMES - 1024)),
    ],
    ['pfn 0', 'EIO', /memfd_luo_run_ser\[2\]: pfn 0 \(/, (at) => void (at.runs[2]!.pfn = 0n)],
    [
      'a folio of the run array listed as file data',
      'EIO',
      /memfd_luo_run_ser\[2\]: pfn 0x[0-9a-f]+ lies in the entry array/,
      (at) => void (at.runs[2]!.pfn = BigInt(at.arrayFolio)),
    ],
    [
      'two runs its writer would have made one',
      'EIO',
      /memfd_luo_run_ser\[1\]: pfn 0x[0-9a-f]+ index 1024 order 9 continues entry 0/,
      (at) => {
        const [first, ...rest] = at.runs as [MemfdLuoRunSer, ...MemfdLuoRunSer[]];
        const half = { ...first, nrFolios: 2 };
        const second = { ...first, nrFolios: 2, index: 1024n, pfn: first.pfn + 1024n };
        at.runs = [half, second, ...rest];
        at.ser.nrRuns = BigInt(at.runs.length);
      },
    ],
  ])(
    'fails that file alone with %s, logs the field, and keeps its folios reserved',
    async (_what, errno, logged, damage) => {
      const { next, dmesg, victim, bystander, other } = await liveUpdateDamagedV3(damage);
      const device = await LiveUpdateDevice.open(next);
      const vm0 = await device.retrieveSession('vm0');
      const vm1 = await device.retrieveSession('vm1');
      expect(await errnoOf(vm0.retrieveFd(victim.token))).toBe(errno);
      expect(await errnoOf(vm0.retrieveFd(victim.token))).toBe(errno);
      expect(dmesg()).toMatch(logged);
      expect(dmesg()).toMatch(
        /\(preservedFrames in session "vm0"\); the folios it lists \(nr_runs \d+\) stay reserved/,
      );
      for (const [session, memfd] of [
        [vm0, bystander],
        [vm1, other],
      ] as const) {
        const fd = await session.retrieveFd(memfd.token);
        expectBytes(await readAll(next, fd, memfd.data.length), memfd.data);
      }
      await vm0.finish();
      await vm1.finish();
      // Nothing of the victim was restored: its folios and its memfd_luo_ser, chunk and array
      // page stayed reserved until the last session finished, then were freed as unclaimed.
      const { kho } = await stats(next);
      expect(kho.unrestoredFolios).toBe(0);
      expect(kho.unclaimedFolios).toBe(victim.folios.length + HANDOVER_FRAMES);
      expect(kho.unclaimedFrames).toBe(frameCount(victim) + HANDOVER_FRAMES);
    },
  );
});

describe('runs_crc, the checksum of the run array', () => {
  /**
   * Swap the pfns of the victim's last run and the bystander's last run, both one order-0 folio:
   * every structural check still passes (each frame is preserved with that order, and no frame is
   * named twice), only runs_crc can tell. `reseal` recomputes both files' runs_crc.
   */
  async function swapLastRuns(reseal: boolean) {
    let victimSer = 0;
    const result = await liveUpdateDamaged({
      memfd: MEMFD_MODULE,
      victimSize: 8 * MiB + 3 * PAGE_SIZE,
      damage: ({ memory, khoFdtPhys }) => {
        const located = locate(memory, khoFdtPhys!);
        victimSer = located.ser;
        const victim = editable(memory, located);
        const bystander = editable(memory, locate(memory, khoFdtPhys!, 2n));
        const [mine, theirs] = [victim.runs.at(-1)!, bystander.runs.at(-1)!];
        expect([mine.order, mine.nrFolios, theirs.order, theirs.nrFolios]).toEqual([0, 1, 0, 1]);
        [mine.pfn, theirs.pfn] = [theirs.pfn, mine.pfn];
        writeBack(memory, victim, reseal);
        writeBack(memory, bystander, reseal);
      },
    });
    const device = await LiveUpdateDevice.open(result.next);
    return { ...result, device, vm0: await device.retrieveSession('vm0'), victimSer };
  }

  it("misses nothing a swap of two frames between files does: resealed, each file gets the other's page", async () => {
    const { next, vm0, victim, bystander } = await swapLastRuns(true);
    const victimFd = await vm0.retrieveFd(victim.token);
    const bystanderFd = await vm0.retrieveFd(bystander.token);
    const last = (data: Uint8Array) => data.subarray(data.length - PAGE_SIZE);
    expectBytes(last(await readAll(next, victimFd, victim.data.length)), last(bystander.data));
    expectBytes(last(await readAll(next, bystanderFd, bystander.data.length)), last(victim.data));
  });

  it('fails both files of the swap with EIO before any run is used, logged and naming runs_crc', async () => {
    const { next, dmesg, device, vm0, victim, bystander, other, victimSer } =
      await swapLastRuns(false);
    for (const memfd of [victim, bystander, victim]) {
      expect(await errnoOf(vm0.retrieveFd(memfd.token))).toBe('EIO');
    }
    expect(dmesg()).toMatch(
      new RegExp(
        `memfd: memfd_luo_ser at ${hex(victimSer)}: runs_crc 0x[0-9a-f]+ does not match its 3 runs entries \\(crc32c 0x[0-9a-f]+\\) \\(preservedFrames in session "vm0"\\); the folios it lists \\(nr_runs 3\\) stay reserved`,
      ),
    );
    // The file of the other session comes back intact.
    const vm1 = await device.retrieveSession('vm1');
    const fd = await vm1.retrieveFd(other.token);
    expectBytes(await readAll(next, fd, other.data.length), other.data);
  });
});
