// memfd-v2 handovers (written and read by the memfd-v2 build) damaged byte by byte between two
// kernels, through LUO: the damaged file fails
// alone with the documented errno and a log line, the other files come back intact, and the
// frames that cannot be trusted stay reserved while everything else is restored or freed.
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { PAGE_SIZE, type PhysicalMemory, type Process } from '@liveupdate/machine';
import {
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_UPTODATE,
  memfdLuoFolioSer,
  memfdLuoSer,
  packPfnFlags,
  unpackPfnFlags,
} from '@liveupdate/plugin-memfd';
import {
  MEMFD_V2_MODULE,
  MiB,
  errnoOf,
  expectBytes,
  frameCount,
  liveUpdateDamaged,
  readAll,
  stats,
  type PreservedMemfdView,
} from './helpers.js';

/** Where one memfd's handover lies in RAM: its memfd_luo_ser, kho_vmalloc_chunk and array page. */
interface MemfdHandover {
  readonly ser: number;
  readonly chunk: number;
  readonly array: number;
}

type Preserved = PreservedMemfdView;

const u64 = (value: number): Buffer => {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(BigInt(value));
  return bytes;
};

/** The one place in RAM where `bytes` sits at `offsetInPage` of a page; throws unless exactly one. */
function findInPage(memory: PhysicalMemory, bytes: Uint8Array, offsetInPage: number): number {
  const view = memory.view(0, memory.size);
  const ram = Buffer.from(view.buffer, view.byteOffset, view.length);
  const found: number[] = [];
  for (let at = ram.indexOf(bytes); at >= 0; at = ram.indexOf(bytes, at + 1)) {
    if (at % PAGE_SIZE === offsetInPage) found.push(at - offsetInPage);
  }
  if (found.length !== 1)
    throw new Error(`expected one page holding the bytes, found ${found.length}`);
  return found[0]!;
}

/**
 * Find a memfd's handover from the frame of its first folio, as the writer laid it out: the array
 * page starts with the entry of that folio, the chunk lists the array page in `phys[0]`, and
 * `memfd_luo_ser.folios.first` (offset 32) is the chunk.
 */
function locate(memory: PhysicalMemory, memfd: Preserved): MemfdHandover {
  const entry = memfdLuoFolioSer.encode({
    pfnFlags: packPfnFlags(
      memfd.folios[0]!.phys / PAGE_SIZE,
      MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE,
    ),
    index: 0n,
  });
  const array = findInPage(memory, entry, 0);
  const chunk = findInPage(memory, u64(array), 8);
  const ser = findInPage(memory, u64(chunk), 32);
  return { ser, chunk, array };
}

/** Rewrite entry `i` of the folio array at `array`. */
function rewriteEntry(
  memory: PhysicalMemory,
  array: number,
  i: number,
  change: (entry: { pfn: number; flags: number; index: bigint }) => {
    pfn: number;
    flags: number;
    index: bigint;
  },
): void {
  const at = memory.view(array + i * memfdLuoFolioSer.size, memfdLuoFolioSer.size);
  const raw = memfdLuoFolioSer.decode(at);
  const next = change({ ...unpackPfnFlags(raw.pfnFlags), index: raw.index });
  memfdLuoFolioSer.encodeInto(at, 0, {
    pfnFlags: packPfnFlags(next.pfn, next.flags),
    index: next.index,
  });
}

/** Rewrite fields of the memfd_luo_ser at `ser`. */
function rewriteSer(
  memory: PhysicalMemory,
  ser: number,
  change: (value: ReturnType<typeof memfdLuoSer.decode>) => void,
): void {
  const view = memory.view(ser, memfdLuoSer.size);
  const value = memfdLuoSer.decode(view);
  change(value);
  memfdLuoSer.encodeInto(view, 0, value);
}

type Damage = (
  memory: PhysicalMemory,
  victim: MemfdHandover,
  memfds: { victim: Preserved; other: Preserved },
) => void;

/** Three memfds, the victim of 2 MiB + 3 pages (folios of order 9, 1 and 0), in memfd-v2. */
async function liveUpdateDamagedV2(damage: Damage) {
  const result = await liveUpdateDamaged({
    memfd: MEMFD_V2_MODULE,
    victimSize: 2 * MiB + 3 * PAGE_SIZE,
    damage: ({ memory }, { victim, other }) =>
      damage(memory, locate(memory, victim), { victim, other }),
  });
  expect(result.victim.folios.map((f) => f.order)).toEqual([9, 1, 0]);
  return result;
}

/** Retrieve `memfd` in the new kernel and compare every byte. */
async function expectIntact(
  next: Process,
  session: Awaited<ReturnType<LiveUpdateDevice['retrieveSession']>>,
  memfd: Preserved,
): Promise<void> {
  const fd = await session.retrieveFd(memfd.token);
  expectBytes(await readAll(next, fd, memfd.data.length), memfd.data);
}

/** Frames of one memfd's handover besides its folios: memfd_luo_ser, chunk, array page. */
const HANDOVER_FRAMES = 3;

describe('a memfd whose folio list its writer cannot have written', () => {
  it.each<[string, 'EINVAL' | 'EIO', RegExp, Damage]>([
    [
      'a folio count of 0 for a non-empty file',
      'EINVAL',
      /memfd_luo_ser at 0x[0-9a-f]+: nr_folios 0 for size 2109440 \(515 pages\)/,
      (memory, at) => rewriteSer(memory, at.ser, (ser) => void (ser.nrFolios = 0n)),
    ],
    [
      'a folio with pfn 0',
      'EIO',
      /memfd_luo_ser at 0x[0-9a-f]+: memfd_luo_folio_ser\[1\]: pfn 0 /,
      (memory, at) => rewriteEntry(memory, at.array, 1, (e) => ({ ...e, pfn: 0 })),
    ],
    [
      'a folio without UPTODATE',
      'EIO',
      /memfd_luo_folio_ser\[0\]: flags 0x1, not DIRTY\|UPTODATE \(0x3\)/,
      (memory, at) =>
        rewriteEntry(memory, at.array, 0, (e) => ({ ...e, flags: MEMFD_LUO_FOLIO_DIRTY })),
    ],
    [
      'a first folio that is not at page 0',
      'EIO',
      /memfd_luo_folio_ser\[0\]: index 1 to the next folio's 512 is 511 pages, not a folio/,
      (memory, at) => rewriteEntry(memory, at.array, 0, (e) => ({ ...e, index: 1n })),
    ],
    [
      'a size one page larger than the folios cover',
      'EIO',
      /memfd_luo_folio_ser\[2\]: pfn 0x[0-9a-f]+ (order 1 was preserved with order 0|is not an order-1 folio: not aligned)/,
      (memory, at) => rewriteSer(memory, at.ser, (ser) => void (ser.size += BigInt(PAGE_SIZE))),
    ],
    [
      'a folio array description with more pages than the entries need',
      'EINVAL',
      /folios \(total_pages 2, flags 0x1, order 0\) is not the array of 3 entries \(1 pages/,
      (memory, at) => rewriteSer(memory, at.ser, (ser) => void (ser.folios.totalPages = 2)),
    ],
    [
      'a position beyond any offset',
      'EINVAL',
      /memfd_luo_ser at 0x[0-9a-f]+: pos 1152921504606846976 is beyond any offset/,
      (memory, at) => rewriteSer(memory, at.ser, (ser) => void (ser.pos = 1n << 60n)),
    ],
  ])(
    'fails that file alone with %s, logs it, and keeps its folios reserved',
    async (_what, errno, logged, damage) => {
      const { next, dmesg, victim, bystander, other } = await liveUpdateDamagedV2(damage);
      const device = await LiveUpdateDevice.open(next);
      const vm0 = await device.retrieveSession('vm0');
      const vm1 = await device.retrieveSession('vm1');
      expect(await errnoOf(vm0.retrieveFd(victim.token))).toBe(errno);
      // Sticky: the second try gives the same errno without calling the handler again.
      expect(await errnoOf(vm0.retrieveFd(victim.token))).toBe(errno);
      expect(dmesg()).toMatch(logged);
      // Found when LUO deserializes, at the first open, before anything is retrieved.
      expect(dmesg()).toMatch(
        /\(preservedFrames in session "vm0"\); the folios it lists \(nr_folios \d+\) stay reserved/,
      );
      expect(dmesg()).toMatch(
        new RegExp(
          `LUO: session "vm0" token 1: the frames it claims cannot be read \\(.*\\); it fails with ${errno}`,
        ),
      );
      await expectIntact(next, vm0, bystander);
      await expectIntact(next, vm1, other);
      await vm0.finish();
      await vm1.finish();
      // Nothing of the victim was restored: its folios and its memfd_luo_ser, chunk and array
      // page stayed reserved until the last session finished, then KHO freed and reported them
      // as unclaimed; nothing else was unclaimed.
      const { kho } = await stats(next);
      expect(kho.unrestoredFolios).toBe(0);
      expect(kho.unclaimedFolios).toBe(victim.folios.length + HANDOVER_FRAMES);
      expect(kho.unrestoredFrames).toBe(0);
      expect(kho.unclaimedFrames).toBe(frameCount(victim) + HANDOVER_FRAMES);
    },
  );

  it('lets its session finish when it was never retrieved, its frames then freed as unclaimed', async () => {
    const { next, victim, bystander } = await liveUpdateDamagedV2((memory, at) =>
      rewriteEntry(memory, at.array, 1, (e) => ({ ...e, pfn: 0 })),
    );
    const device = await LiveUpdateDevice.open(next);
    const vm0 = await device.retrieveSession('vm0');
    await expectIntact(next, vm0, bystander);
    await vm0.finish();
    await (await device.retrieveSession('vm1')).finish();
    const { kho } = await stats(next);
    expect(kho.unrestoredFolios).toBe(0);
    expect(kho.unclaimedFolios).toBe(victim.folios.length + HANDOVER_FRAMES);
    expect(kho.unrestoredFrames).toBe(0);
    expect(kho.unclaimedFrames).toBe(frameCount(victim) + HANDOVER_FRAMES);
  });
});

describe('frames claimed by two files', () => {
  it('fails both files with a sticky EIO before either is retrieved, naming both and the range', async () => {
    let shared = 0;
    const { next, dmesg, victim, bystander, other } = await liveUpdateDamagedV2(
      (memory, at, { other }) => {
        // The victim's order-0 folio now names the other file's order-0 folio.
        shared = other.folios[2]!.phys;
        rewriteEntry(memory, at.array, 2, (e) => ({ ...e, pfn: shared / PAGE_SIZE }));
      },
    );
    const device = await LiveUpdateDevice.open(next);
    const range = `\\[0x${shared.toString(16)}, 0x${(shared + PAGE_SIZE).toString(16)}\\)`;
    expect(dmesg()).toMatch(
      new RegExp(
        `LUO: frames ${range} are claimed by session "vm0" token 1 and session "vm1" token 1; both fail with EIO`,
      ),
    );
    const vm0 = await device.retrieveSession('vm0');
    const vm1 = await device.retrieveSession('vm1');
    // Whichever is asked first, neither gets the other's frames.
    expect(await errnoOf(vm1.retrieveFd(other.token))).toBe('EIO');
    expect(await errnoOf(vm0.retrieveFd(victim.token))).toBe('EIO');
    expect(await errnoOf(vm1.retrieveFd(other.token))).toBe('EIO');
    await expectIntact(next, vm0, bystander);
    await vm0.finish();
    await vm1.finish();
    // Both files stayed reserved whole (memfd_luo_ser, chunk, array page and folios each),
    // including the victim's folio that its damaged list no longer names, until the last session
    // finished; then KHO freed and reported them as unclaimed.
    const { kho } = await stats(next);
    expect(kho.unrestoredFolios).toBe(0);
    expect(kho.unclaimedFolios).toBe(
      victim.folios.length + other.folios.length + 2 * HANDOVER_FRAMES,
    );
    expect(kho.unrestoredFrames).toBe(0);
    expect(kho.unclaimedFrames).toBe(frameCount(victim) + frameCount(other) + 2 * HANDOVER_FRAMES);
  });
});
