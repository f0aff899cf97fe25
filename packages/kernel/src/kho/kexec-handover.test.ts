import 'reflect-metadata';
import { describe, expect, it } from 'vitest';
import { KernelError, PAGE_SIZE, PhysicalMemory, hex } from '@liveupdate/machine';
import { CommandLine } from '../command-line.js';
import { KernelLog } from '../kernel-log.js';
import { planMemoryLayout } from '../memory-layout.js';
import { MAX_PAGE_ORDER, PageAllocator, type Folio } from '../page-allocator.js';
import {
  FDT_HEADER_SIZE,
  decodeFdt,
  readFdtHeader,
  readString,
  readU32,
  readU64,
} from '@liveupdate/fdt';
import { crc32c } from '../crc32c.js';
import { KexecHandover } from './kexec-handover.js';
import { KHO_PROP_MEMORY_MAP } from './kho-abi.js';
import { readKhoMemoryMap } from './kho-memory-map.js';
import { errnoOf } from '../../test/errno-of.js';
import { bootMemory, type MemoryBoot } from '../../test/memory-boot.js';

const MiB = 1024 * 1024;
const RAM = 16 * MiB;
const FRAMES = RAM / PAGE_SIZE;
const FIRMWARE_FRAMES = MiB / PAGE_SIZE;
/** Default scratch on 16 MiB RAM: 4 MiB right above the firmware megabyte. */
const SCRATCH = { pfn: FIRMWARE_FRAMES, frames: (4 * MiB) / PAGE_SIZE };
const SCRATCH_END = SCRATCH.pfn + SCRATCH.frames;
const POISON = 0xaa;

type Kernel = MemoryBoot;

function coldBoot(text = 'kho=on page_poison=on'): Kernel {
  return bootMemory(PhysicalMemory.allocate(RAM), text);
}

/** Allocate every free frame as order-0 folios: KHO preserves only allocated memory. */
function allocateAll(k: ReturnType<typeof coldBoot>): void {
  while (k.pages.stats.free > 0) k.pages.allocPages(0);
}

function framesFilledWith(
  memory: PhysicalMemory,
  pfn: number,
  frames: number,
  value: number,
): boolean {
  const expected = Buffer.alloc(PAGE_SIZE, value);
  for (let p = pfn; p < pfn + frames; p++) {
    if (!expected.equals(memory.view(p * PAGE_SIZE, PAGE_SIZE))) return false;
  }
  return true;
}

function drain(pages: PageAllocator): Folio[] {
  const folios: Folio[] = [];
  for (;;) {
    try {
      folios.push(pages.allocPages(0));
    } catch (error) {
      if (KernelError.isInstance(error) && error.code === 'ENOMEM') return folios;
      throw error;
    }
  }
}

const BLOB_SIZE = 10_000;
const blobBytes = (): Uint8Array =>
  Uint8Array.from({ length: BLOB_SIZE }, (_, i) => (i * 7 + 3) & 0xff);

/**
 * Kernel 1 preserves folios of orders 0, 3 and 10, 13 frames of a 16-frame folio with
 * preservePages, a 10000-byte blob from allocPreserve published as subtree "luo", and the order-0
 * folio again as subtree "memfd.0"; then it writes the handover and kernel 2 boots from it.
 */
function preserveAndKexec() {
  const k1 = coldBoot();
  const { memory, pages, kho } = k1;
  const small = pages.allocPages(0);
  const mid = pages.allocPages(3);
  const huge = pages.allocPages(MAX_PAGE_ORDER);
  const range = pages.allocPages(4);
  memory.fill(small.pfn * PAGE_SIZE, PAGE_SIZE, 0x01);
  memory.fill(mid.pfn * PAGE_SIZE, 8 * PAGE_SIZE, 0x03);
  memory.fill(huge.pfn * PAGE_SIZE, 1024 * PAGE_SIZE, 0x0a);
  memory.fill(range.pfn * PAGE_SIZE, 16 * PAGE_SIZE, 0x44);
  kho.preserveFolio(small);
  kho.preserveFolio(mid);
  kho.preserveFolio(huge);
  // Frames 1..13 of the 16: chunks 1 (o0), 2 (o1), 4 (o2), 8 (o2), 12 (o1).
  kho.preservePages(range.pfn + 1, 13);
  const blobPhys = kho.allocPreserve(BLOB_SIZE);
  memory.write(blobPhys, blobBytes());
  kho.addSubtree('luo', blobPhys, BLOB_SIZE);
  kho.addSubtree('memfd.0', small.pfn * PAGE_SIZE, PAGE_SIZE);
  const outgoing = kho.stats;
  const fdtPhys = kho.finalize();
  if (fdtPhys === null) throw new Error('KHO is on: finalize must write a handover');
  const k2 = bootMemory(memory, 'kho=on page_poison=on', fdtPhys);
  return { k1, k2, small, mid, huge, range, blobPhys, fdtPhys, outgoing };
}

/** Folios preserved by {@link preserveAndKexec}: 3 folios, 5 chunks and the blob (order 2). */
const PRESERVED_FOLIOS = 3 + 5 + 1;
const PRESERVED_FRAMES = 1 + 8 + 1024 + 13 + 4;

describe('KexecHandover across an in-process kexec', () => {
  it('hands exactly the preserved folios to the next kernel, which keeps them reserved', () => {
    const { k1, k2, outgoing, fdtPhys } = preserveAndKexec();
    expect(outgoing).toEqual({
      preservedFolios: PRESERVED_FOLIOS,
      preservedFrames: PRESERVED_FRAMES,
      unrestoredFolios: 0,
      unrestoredFrames: 0,
      unclaimedFolios: 0,
      unclaimedFrames: 0,
    });
    expect(k1.kho.isKhoBoot).toBe(false);
    expect(k2.kho.isKhoBoot).toBe(true);
    expect(k2.incoming!.fdtPhys).toBe(fdtPhys);
    // The root FDT and one map page travel as well.
    expect(k2.incoming!.folios).toHaveLength(PRESERVED_FOLIOS + 2);
    expect(k2.incoming!.handoverFolios).toHaveLength(2);
    expect(k2.kho.stats).toEqual({
      preservedFolios: 0,
      preservedFrames: 0,
      unrestoredFolios: PRESERVED_FOLIOS,
      unrestoredFrames: PRESERVED_FRAMES,
      unclaimedFolios: 0,
      unclaimedFrames: 0,
    });
    expect(k2.pages.stats).toEqual({
      total: FRAMES,
      free: FRAMES - FIRMWARE_FRAMES - SCRATCH.frames - PRESERVED_FRAMES,
      allocated: 0,
      reserved: FIRMWARE_FRAMES + PRESERVED_FRAMES,
      scratch: SCRATCH.frames,
    });
  });

  it("reuses the first kernel's scratch area", () => {
    const { k1, k2 } = preserveAndKexec();
    expect(k1.layout.scratch).toEqual(SCRATCH);
    expect(k2.layout.scratch).toEqual(SCRATCH);
    expect(k2.incoming!.scratch).toEqual(SCRATCH);
  });

  it('keeps preserved bytes while the frames around them are poisoned', () => {
    const { k2, small, mid, huge, range, blobPhys } = preserveAndKexec();
    const { memory } = k2;
    expect(framesFilledWith(memory, small.pfn, 1, 0x01)).toBe(true);
    expect(framesFilledWith(memory, mid.pfn, 8, 0x03)).toBe(true);
    expect(framesFilledWith(memory, huge.pfn, 1024, 0x0a)).toBe(true);
    expect(framesFilledWith(memory, range.pfn + 1, 13, 0x44)).toBe(true);
    expect(memory.read(blobPhys, BLOB_SIZE)).toEqual(blobBytes());
    // Frames 0, 14 and 15 of the range were allocated but not preserved: gone.
    expect(framesFilledWith(memory, range.pfn, 1, POISON)).toBe(true);
    expect(framesFilledWith(memory, range.pfn + 14, 2, POISON)).toBe(true);
  });

  it("frees the handover's own frames once it is parsed", () => {
    const { k2, fdtPhys } = preserveAndKexec();
    const handover = k2.incoming!.handoverFolios;
    expect(handover[0]!.pfn).toBe(fdtPhys / PAGE_SIZE);
    for (const folio of handover) {
      expect(k2.pages.isAllocated(folio.pfn, folio.order)).toBe(false);
      expect(framesFilledWith(k2.memory, folio.pfn, 2 ** folio.order, POISON)).toBe(true);
      expect(errnoOf(() => k2.kho.restoreFolio(folio.pfn * PAGE_SIZE, folio.order))).toBe('EINVAL');
    }
    const allocatable = new Set(drain(k2.pages).map((f) => f.pfn));
    for (const folio of handover) expect(allocatable.has(folio.pfn)).toBe(true);
  });

  it('lets the next kernel retrieve each subtree with its address and size', () => {
    const { k1, k2, small, blobPhys } = preserveAndKexec();
    expect(k2.kho.retrieveSubtree('luo')).toEqual({ phys: blobPhys, size: BLOB_SIZE });
    expect(k2.kho.retrieveSubtree('memfd.0')).toEqual({
      phys: small.pfn * PAGE_SIZE,
      size: PAGE_SIZE,
    });
    expect(errnoOf(() => k2.kho.retrieveSubtree('nope'))).toBe('ENOENT');
    expect(errnoOf(() => k1.kho.retrieveSubtree('luo'))).toBe('ENOENT');
  });

  it('restores a folio once, and only with the order it was preserved with', () => {
    const { k2, mid } = preserveAndKexec();
    const phys = mid.pfn * PAGE_SIZE;
    const before = k2.pages.stats;
    expect(errnoOf(() => k2.kho.restoreFolio(phys, 2))).toBe('EINVAL');
    expect(errnoOf(() => k2.kho.restoreFolio(phys, 4))).toBe('EINVAL');
    expect(errnoOf(() => k2.kho.restoreFolio(phys, MAX_PAGE_ORDER + 1))).toBe('EINVAL');
    expect(k2.pages.stats).toEqual(before);
    expect(k2.kho.stats.unrestoredFolios).toBe(PRESERVED_FOLIOS);

    expect(k2.kho.restoreFolio(phys, 3)).toEqual({ pfn: mid.pfn, order: 3 });
    expect(k2.pages.isAllocated(mid.pfn, 3)).toBe(true);
    expect(k2.pages.stats).toMatchObject({
      reserved: before.reserved - 8,
      allocated: 8,
      free: before.free,
    });
    expect(k2.kho.stats).toMatchObject({
      unrestoredFolios: PRESERVED_FOLIOS - 1,
      unrestoredFrames: PRESERVED_FRAMES - 8,
    });
    expect(errnoOf(() => k2.kho.restoreFolio(phys, 3))).toBe('EINVAL');

    // The restored folio is an ordinary allocation: freeing it poisons it and returns it.
    expect(framesFilledWith(k2.memory, mid.pfn, 8, 0x03)).toBe(true);
    k2.pages.freePages({ pfn: mid.pfn, order: 3 });
    expect(framesFilledWith(k2.memory, mid.pfn, 8, POISON)).toBe(true);
    expect(k2.pages.stats.free).toBe(before.free + 8);
  });

  it('refuses to restore what was never preserved or a misaligned address', () => {
    const { k2, range } = preserveAndKexec();
    expect(errnoOf(() => k2.kho.restoreFolio(range.pfn * PAGE_SIZE, 0))).toBe('EINVAL');
    expect(errnoOf(() => k2.kho.restoreFolio((range.pfn + 1) * PAGE_SIZE + 8, 0))).toBe('EINVAL');
    expect(errnoOf(() => k2.kho.restoreFolio(-PAGE_SIZE, 0))).toBe('EINVAL');
    expect(k2.kho.stats.unrestoredFolios).toBe(PRESERVED_FOLIOS);
  });

  it('restores a page range only with the same range, all chunks or none', () => {
    const { k2, range } = preserveAndKexec();
    const start = (range.pfn + 1) * PAGE_SIZE;
    expect(errnoOf(() => k2.kho.restorePages(start, 12))).toBe('EINVAL');
    expect(errnoOf(() => k2.kho.restorePages(start, 14))).toBe('EINVAL');
    expect(errnoOf(() => k2.kho.restorePages(start + PAGE_SIZE, 13))).toBe('EINVAL');
    expect(errnoOf(() => k2.kho.restorePages(start, 0))).toBe('EINVAL');
    expect(k2.kho.stats.unrestoredFolios).toBe(PRESERVED_FOLIOS);

    const p = range.pfn;
    expect(k2.kho.restorePages(start, 13)).toEqual([
      { pfn: p + 1, order: 0 },
      { pfn: p + 2, order: 1 },
      { pfn: p + 4, order: 2 },
      { pfn: p + 8, order: 2 },
      { pfn: p + 12, order: 1 },
    ]);
    expect(k2.kho.stats.unrestoredFolios).toBe(PRESERVED_FOLIOS - 5);
    expect(k2.pages.stats.allocated).toBe(13);
    expect(errnoOf(() => k2.kho.restorePages(start, 13))).toBe('EINVAL');
  });

  it('restores none of a page range when one of its chunks is already restored', () => {
    const { k2, range } = preserveAndKexec();
    const p = range.pfn;
    k2.kho.restoreFolio((p + 4) * PAGE_SIZE, 2);
    const stats = k2.kho.stats;
    expect(errnoOf(() => k2.kho.restorePages((p + 1) * PAGE_SIZE, 13))).toBe('EINVAL');
    expect(k2.kho.stats).toEqual(stats);
    // The other chunks are still there to restore one by one.
    for (const [pfn, order] of [
      [p + 1, 0],
      [p + 2, 1],
      [p + 8, 2],
      [p + 12, 1],
    ] as const) {
      expect(k2.kho.restoreFolio(pfn * PAGE_SIZE, order).pfn).toBe(pfn);
    }
  });

  it('restoreFree gives a preserved folio straight back to the allocator', () => {
    const { k2, huge } = preserveAndKexec();
    const before = k2.pages.stats;
    k2.kho.restoreFree(huge.pfn * PAGE_SIZE);
    expect(k2.pages.stats).toMatchObject({
      free: before.free + 1024,
      reserved: before.reserved - 1024,
      allocated: 0,
    });
    expect(framesFilledWith(k2.memory, huge.pfn, 1024, POISON)).toBe(true);
    expect(errnoOf(() => k2.kho.restoreFree(huge.pfn * PAGE_SIZE))).toBe('EINVAL');
    expect(errnoOf(() => k2.kho.restoreFolio(huge.pfn * PAGE_SIZE, MAX_PAGE_ORDER))).toBe('EINVAL');
  });

  it('does not hand over again what the next kernel left unrestored', () => {
    const { k2, mid, huge } = preserveAndKexec();
    const restored = k2.kho.restoreFolio(mid.pfn * PAGE_SIZE, 3);
    k2.kho.preserveFolio(restored);
    const fdtPhys = k2.kho.finalize()!;
    const k3 = bootMemory(k2.memory, 'kho=on page_poison=on', fdtPhys);
    expect(k3.kho.stats).toMatchObject({ unrestoredFolios: 1, unrestoredFrames: 8 });
    expect(k3.pages.stats.reserved).toBe(FIRMWARE_FRAMES + 8);
    expect(k3.layout.scratch).toEqual(SCRATCH);
    expect(framesFilledWith(k3.memory, mid.pfn, 8, 0x03)).toBe(true);
    expect(framesFilledWith(k3.memory, huge.pfn, 1024, POISON)).toBe(true);
    expect(errnoOf(() => k3.kho.retrieveSubtree('luo'))).toBe('ENOENT');
  });

  it('reports what the next kernel left unrestored at the second kexec: subtrees, folios, bytes', () => {
    const { k2, mid } = preserveAndKexec();
    k2.kho.retrieveSubtree('luo');
    k2.kho.restoreFree(mid.pfn * PAGE_SIZE);
    k2.kho.finalize();
    // 9 preserved folios, less the order-3 one: 1 + 1024 + 13 + 4 frames.
    expect(k2.lines).toContainEqual(
      expect.stringMatching(
        /^KHO: 8 folios \(4168K\) the previous kernel preserved were never restored and are not handed on; subtrees never retrieved: memfd\.0; folios: 0x[0-9a-f]+\+0x[0-9a-f]+, /,
      ),
    );
  });

  it('reclaims what nobody restored: frees it, counts it, names it once, and restores it never', () => {
    const { k2, small, mid, huge } = preserveAndKexec();
    k2.kho.restoreFree(mid.pfn * PAGE_SIZE);
    k2.kho.retrieveSubtree('memfd.0');
    const free = k2.pages.stats.free;
    const frames = k2.kho.reclaimUnrestored('LUO: every incoming session has finished');
    expect(frames).toBe(1 + 1024 + 13 + 4);
    expect(k2.pages.stats.free).toBe(free + frames);
    expect(k2.pages.stats.reserved).toBe(FIRMWARE_FRAMES);
    expect(k2.kho.stats).toMatchObject({
      unrestoredFolios: 0,
      unrestoredFrames: 0,
      unclaimedFolios: 8,
      unclaimedFrames: frames,
    });
    expect(framesFilledWith(k2.memory, huge.pfn, 1024, POISON)).toBe(true);
    const warnings = k2.lines.filter((line) => line.includes('nobody restored'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /^KHO: LUO: every incoming session has finished: freeing 8 preserved folios \(4168K\) nobody restored; subtrees never retrieved: luo; folios: 0x[0-9a-f]+\+0x[0-9a-f]+(, 0x[0-9a-f]+\+0x[0-9a-f]+){7}$/,
    );
    expect(warnings[0]).toContain(`0x${(small.pfn * PAGE_SIZE).toString(16)}+0x1000`);
    expect(errnoOf(() => k2.kho.restoreFolio(small.pfn * PAGE_SIZE, 0))).toBe('EINVAL');
    expect(k2.kho.reclaimUnrestored('again')).toBe(0);
    expect(k2.lines.filter((line) => line.includes('nobody restored'))).toHaveLength(1);
  });

  it.each([
    [0, 1],
    [508, 1],
    [509, 2],
    [1017, 2],
    [1018, 3],
  ])(
    'writes %d preserved folios with enough map pages (%d) to list themselves',
    (count, mapPages) => {
      const k1 = coldBoot('kho=on');
      const folios = Array.from({ length: count }, () => k1.pages.allocPages(0));
      for (const folio of folios) k1.kho.preserveFolio(folio);
      const k2 = bootMemory(k1.memory, 'kho=on', k1.kho.finalize());
      expect(k2.incoming!.handoverFolios).toHaveLength(1 + mapPages);
      expect(k2.kho.stats.unrestoredFolios).toBe(count);
      for (const folio of folios)
        expect(k2.kho.restoreFolio(folio.pfn * PAGE_SIZE, 0)).toEqual(folio);
    },
  );
});

describe('KexecHandover: restoring a run of contiguous folios', () => {
  /** Kernel 1 preserves 6 order-2 folios laid end to end; kernel 2 boots from the handover. */
  function runKexec() {
    const k1 = coldBoot('kho=on');
    const block = k1.pages.allocPages(5);
    k1.pages.freePages(block);
    const folios = Array.from({ length: 6 }, () => k1.pages.allocPages(2));
    folios.sort((a, b) => a.pfn - b.pfn);
    for (let k = 1; k < folios.length; k++) expect(folios[k]!.pfn).toBe(folios[0]!.pfn + 4 * k);
    folios.forEach((folio, k) => k1.memory.fill(folio.pfn * PAGE_SIZE, 4 * PAGE_SIZE, 0x10 + k));
    for (const folio of folios) k1.kho.preserveFolio(folio);
    const k2 = bootMemory(k1.memory, 'kho=on page_poison=on', k1.kho.finalize());
    return { k2, folios, first: folios[0]!.pfn * PAGE_SIZE };
  }

  it('gives the same frames, with their bytes, as restoring each folio', () => {
    const { k2, folios, first } = runKexec();
    expect(k2.kho.incomingRun(first, 6, 2)).toBe(6);
    const before = k2.kho.stats;
    expect(k2.kho.restoreFolios(first, 6, 2)).toEqual(folios);
    folios.forEach((folio, k) => {
      expect(framesFilledWith(k2.memory, folio.pfn, 4, 0x10 + k)).toBe(true);
      expect(k2.pages.isAllocated(folio.pfn, 2)).toBe(true);
    });
    expect(k2.kho.stats.unrestoredFolios).toBe(before.unrestoredFolios - 6);
    expect(k2.kho.stats.unrestoredFrames).toBe(before.unrestoredFrames - 24);
    expect(k2.kho.incomingRun(first, 6, 2)).toBe(0);
    expect(errnoOf(() => k2.kho.restoreFolio(first, 2))).toBe('EINVAL');
  });

  it('restores a run as one step with restoreFolioRun, and refuses it a second time', () => {
    const { k2, folios, first } = runKexec();
    const before = k2.kho.stats;
    expect(k2.kho.restoreFolioRun(first, 6, 2)).toBe(folios[0]!.pfn);
    for (const folio of folios) expect(k2.pages.isAllocated(folio.pfn, 2)).toBe(true);
    expect(k2.kho.stats.unrestoredFolios).toBe(before.unrestoredFolios - 6);
    expect(errnoOf(() => k2.kho.restoreFolioRun(first, 6, 2))).toBe('EINVAL');
    expect(errnoOf(() => k2.kho.restoreFolioRun(first, -1, 2))).toBe('EINVAL');
    // Each folio of the run is freed on its own, as any restored folio.
    for (const folio of folios) k2.pages.freePages(folio);
    expect(k2.pages.isAllocated(folios[0]!.pfn, 2)).toBe(false);
  });

  it('counts the folios held in a row and restores none of a run that is not all held', () => {
    const { k2, folios, first } = runKexec();
    k2.kho.restoreFolio(folios[3]!.pfn * PAGE_SIZE, 2);
    expect(k2.kho.incomingRun(first, 6, 2)).toBe(3);
    expect(k2.kho.incomingRun(first, 6, 1)).toBe(0);
    expect(k2.kho.incomingRun(first + 8, 2, 2)).toBe(0);
    const before = k2.kho.stats;
    let error: unknown;
    try {
      k2.kho.restoreFolios(first, 6, 2);
    } catch (caught) {
      error = caught;
    }
    expect(KernelError.isInstance(error) && error.code).toBe('EINVAL');
    expect((error as Error).message).toContain(
      `${hex(folios[3]!.pfn * PAGE_SIZE)} was not preserved or is already restored`,
    );
    expect(errnoOf(() => k2.kho.restoreFolios(first + 4 * PAGE_SIZE, 2, 1))).toBe('EINVAL');
    expect(k2.kho.stats).toEqual(before);
    for (const k of [0, 1, 2, 4, 5]) {
      expect(k2.kho.incomingOrder(folios[k]!.pfn * PAGE_SIZE), `folio ${k}`).toBe(2);
    }
    // The rest of the run is restored as two runs around the folio restored alone.
    expect(k2.kho.restoreFolios(first, 3, 2)).toEqual(folios.slice(0, 3));
    expect(k2.kho.restoreFolios(folios[4]!.pfn * PAGE_SIZE, 2, 2)).toEqual(folios.slice(4));
  });
});

describe('KexecHandover preservation', () => {
  it('refuses everything with EINVAL when KHO is off, and finalize writes nothing', () => {
    const k = coldBoot('page_poison=on');
    const folio = k.pages.allocPages(0);
    expect(k.kho.enabled).toBe(false);
    expect(errnoOf(() => k.kho.preserveFolio(folio))).toBe('EINVAL');
    expect(errnoOf(() => k.kho.preservePages(folio.pfn, 1))).toBe('EINVAL');
    expect(errnoOf(() => k.kho.unpreserveFolio(folio))).toBe('EINVAL');
    expect(errnoOf(() => k.kho.allocPreserve(100))).toBe('EINVAL');
    expect(errnoOf(() => k.kho.addSubtree('luo', folio.pfn * PAGE_SIZE, 16))).toBe('EINVAL');
    expect(k.kho.finalize()).toBeNull();
    expect(k.kho.stats.preservedFolios).toBe(0);
    expect(k.pages.stats.allocated).toBe(1);
  });

  it('stays off, like the rest of the boot, when kho= cannot be parsed', () => {
    // The kernel warns about kho=maybe and plans memory with KHO off; KHO must agree, not throw.
    const memory = PhysicalMemory.allocate(RAM);
    const cmdline = new CommandLine('kho=maybe');
    const log = new KernelLog(() => {}, KernelLog.now());
    const layout = planMemoryLayout(memory, cmdline, false, null);
    const pages = new PageAllocator(memory, layout, null, cmdline, log);
    const kho = new KexecHandover(memory, pages, layout, null, cmdline, log);
    expect(kho.enabled).toBe(false);
    expect(errnoOf(() => kho.allocPreserve(100))).toBe('EINVAL');
    expect(kho.finalize()).toBeNull();
  });

  it.each<[string, Folio]>([
    ['the first scratch frame', { pfn: SCRATCH.pfn, order: 0 }],
    ['the last scratch frame', { pfn: SCRATCH_END - 1, order: 0 }],
    ['a folio reaching into scratch', { pfn: 1024, order: 9 }],
    ['the first frame', { pfn: 0, order: 0 }],
    ['the last firmware frame', { pfn: FIRMWARE_FRAMES - 1, order: 0 }],
    ['a folio over firmware and scratch', { pfn: 0, order: MAX_PAGE_ORDER }],
    ['a misaligned order-1 folio', { pfn: 2049, order: 1 }],
    ['a misaligned order-3 folio', { pfn: 2052, order: 3 }],
    ['a frame past the end of RAM', { pfn: FRAMES, order: 0 }],
    ['a negative pfn', { pfn: -1, order: 0 }],
    ['a fractional pfn', { pfn: 2048.5, order: 0 }],
    ['an order above the maximum', { pfn: 2048, order: MAX_PAGE_ORDER + 1 }],
    ['a negative order', { pfn: 2048, order: -1 }],
  ])('refuses to preserve %s with EINVAL', (_what, folio) => {
    const k = coldBoot();
    expect(errnoOf(() => k.kho.preserveFolio(folio))).toBe('EINVAL');
    expect(k.kho.stats.preservedFolios).toBe(0);
  });

  it.each<[string, number, number]>([
    ['that starts in scratch', SCRATCH_END - 1, 2],
    ['that runs past the end of RAM', FRAMES - 1, 2],
    ['of no pages', 2048, 0],
    ['at a negative pfn', -2, 4],
    ['of a fractional count', 2048, 1.5],
  ])(
    'refuses to preserve a page range %s with EINVAL, preserving none of it',
    (_what, pfn, count) => {
      const k = coldBoot();
      expect(errnoOf(() => k.kho.preservePages(pfn, count))).toBe('EINVAL');
      expect(k.kho.stats.preservedFolios).toBe(0);
    },
  );

  it('refuses with EEXIST to preserve a frame twice, in any folio', () => {
    const k = coldBoot();
    allocateAll(k);
    k.kho.preserveFolio({ pfn: 2048, order: 3 });
    for (const folio of [
      { pfn: 2048, order: 3 },
      { pfn: 2048, order: 0 },
      { pfn: 2050, order: 1 },
      { pfn: 2055, order: 0 },
      { pfn: 2048, order: 4 },
      { pfn: 2048, order: MAX_PAGE_ORDER },
    ]) {
      expect(
        errnoOf(() => k.kho.preserveFolio(folio)),
        JSON.stringify(folio),
      ).toBe('EEXIST');
    }
    expect(errnoOf(() => k.kho.preservePages(2047, 2))).toBe('EEXIST');
    expect(k.kho.stats).toMatchObject({ preservedFolios: 1, preservedFrames: 8 });
    // Neighbours are free to preserve: nothing of the failed range stuck.
    k.kho.preserveFolio({ pfn: 2047, order: 0 });
    k.kho.preserveFolio({ pfn: 2056, order: 3 });
  });

  it('refuses with EINVAL to preserve memory that is not allocated', () => {
    const k = coldBoot();
    const folio = k.pages.allocPages(2);
    k.pages.freePages(folio);
    expect(errnoOf(() => k.kho.preserveFolio(folio))).toBe('EINVAL');
    const held = k.pages.allocPages(0);
    // A range that runs from an allocated frame into free ones is refused whole.
    expect(errnoOf(() => k.kho.preservePages(held.pfn, 2))).toBe('EINVAL');
    expect(k.kho.stats.preservedFolios).toBe(0);
    k.kho.preserveFolio(held);
    expect(k.kho.stats.preservedFolios).toBe(1);
  });

  it('unpreserves a folio only with the order it was preserved with', () => {
    const k = coldBoot();
    allocateAll(k);
    k.kho.preserveFolio({ pfn: 2048, order: 3 });
    expect(errnoOf(() => k.kho.unpreserveFolio({ pfn: 2048, order: 2 }))).toBe('EINVAL');
    expect(errnoOf(() => k.kho.unpreserveFolio({ pfn: 2048, order: 4 }))).toBe('EINVAL');
    expect(errnoOf(() => k.kho.unpreserveFolio({ pfn: 2052, order: 2 }))).toBe('EINVAL');
    expect(errnoOf(() => k.kho.unpreserveFolio({ pfn: 3000, order: 0 }))).toBe('EINVAL');
    expect(k.kho.stats.preservedFolios).toBe(1);
    k.kho.unpreserveFolio({ pfn: 2048, order: 3 });
    expect(k.kho.stats).toMatchObject({ preservedFolios: 0, preservedFrames: 0 });
    k.kho.preserveFolio({ pfn: 2052, order: 2 });
  });

  it('unpreserves a page range only with the same range', () => {
    const k = coldBoot();
    allocateAll(k);
    k.kho.preservePages(2049, 13);
    expect(k.kho.stats).toMatchObject({ preservedFolios: 5, preservedFrames: 13 });
    expect(errnoOf(() => k.kho.unpreservePages(2049, 12))).toBe('EINVAL');
    expect(errnoOf(() => k.kho.unpreservePages(2048, 14))).toBe('EINVAL');
    expect(k.kho.stats.preservedFolios).toBe(5);
    k.kho.unpreservePages(2049, 13);
    expect(k.kho.stats.preservedFolios).toBe(0);
  });

  it.each([0, -1, 1.5, Number.NaN])('allocPreserve(%s) fails with EINVAL', (size) => {
    const k = coldBoot();
    expect(errnoOf(() => k.kho.allocPreserve(size))).toBe('EINVAL');
    expect(k.pages.stats.allocated).toBe(0);
  });

  it('allocPreserve fails with E2BIG above the largest folio', () => {
    const k = coldBoot();
    expect(errnoOf(() => k.kho.allocPreserve(4 * MiB + 1))).toBe('E2BIG');
    expect(k.pages.stats.allocated).toBe(0);
    expect(k.kho.stats.preservedFolios).toBe(0);
  });

  it('allocPreserve returns a zeroed, preserved folio just large enough, and unpreserveFree undoes it', () => {
    const k = coldBoot();
    const phys = k.kho.allocPreserve(4 * MiB);
    expect(phys % (4 * MiB)).toBe(0);
    expect(k.pages.isAllocated(phys / PAGE_SIZE, MAX_PAGE_ORDER)).toBe(true);
    expect(framesFilledWith(k.memory, phys / PAGE_SIZE, 1024, 0)).toBe(true);
    const small = k.kho.allocPreserve(PAGE_SIZE + 1);
    expect(k.pages.isAllocated(small / PAGE_SIZE, 1)).toBe(true);
    expect(k.kho.stats).toMatchObject({ preservedFolios: 2, preservedFrames: 1024 + 2 });

    k.kho.unpreserveFree(phys);
    expect(k.kho.stats).toMatchObject({ preservedFolios: 1, preservedFrames: 2 });
    expect(k.pages.stats.allocated).toBe(2);
    expect(framesFilledWith(k.memory, phys / PAGE_SIZE, 1024, POISON)).toBe(true);
    expect(errnoOf(() => k.kho.unpreserveFree(phys))).toBe('EINVAL');
  });

  it('unpreserveFree refuses memory that allocPreserve did not hand out', () => {
    const k = coldBoot();
    const folio = k.pages.allocPages(0);
    allocateAll(k);
    expect(errnoOf(() => k.kho.unpreserveFree(folio.pfn * PAGE_SIZE))).toBe('EINVAL');
    k.kho.preservePages(3000, 4);
    expect(errnoOf(() => k.kho.unpreserveFree(3000 * PAGE_SIZE))).toBe('EINVAL');
    expect(errnoOf(() => k.kho.unpreserveFree(folio.pfn * PAGE_SIZE + 1))).toBe('EINVAL');
    expect(k.kho.stats.preservedFolios).toBe(1);
    expect(k.pages.isAllocated(folio.pfn, 0)).toBe(true);
  });

  it('allocPreserve fails with ENOMEM and preserves nothing when memory is exhausted', () => {
    const k = coldBoot();
    drain(k.pages);
    expect(errnoOf(() => k.kho.allocPreserve(1))).toBe('ENOMEM');
    expect(k.kho.stats.preservedFolios).toBe(0);
  });

  it('validates subtree names and blobs', () => {
    const k = coldBoot();
    const phys = k.kho.allocPreserve(PAGE_SIZE);
    for (const name of ['', 'a/b', 'has space', 'x'.repeat(32), 'luo@1', 'ü']) {
      expect(
        errnoOf(() => k.kho.addSubtree(name, phys, 16)),
        name,
      ).toBe('EINVAL');
    }
    expect(errnoOf(() => k.kho.addSubtree('luo', phys, 0))).toBe('EINVAL');
    expect(errnoOf(() => k.kho.addSubtree('luo', RAM - 10, 20))).toBe('EINVAL');
    expect(errnoOf(() => k.kho.addSubtree('luo', -PAGE_SIZE, 20))).toBe('EINVAL');
    k.kho.addSubtree('x'.repeat(31), phys, 16);
    k.kho.addSubtree('A-z_0.9,+', phys, 16);
  });

  it('refuses a second subtree of the same name with EEXIST until the first is removed', () => {
    const k = coldBoot();
    const first = k.kho.allocPreserve(PAGE_SIZE);
    const second = k.kho.allocPreserve(PAGE_SIZE);
    k.kho.addSubtree('luo', first, 64);
    expect(errnoOf(() => k.kho.addSubtree('luo', second, 64))).toBe('EEXIST');
    expect(errnoOf(() => k.kho.removeSubtree(second))).toBe('ENOENT');
    k.kho.removeSubtree(first);
    k.kho.addSubtree('luo', second, 64);
    const k2 = bootMemory(k.memory, 'kho=on', k.kho.finalize());
    expect(k2.kho.retrieveSubtree('luo')).toEqual({ phys: second, size: 64 });
  });

  it('refuses every change with EBUSY once the handover is written', () => {
    const k = coldBoot();
    const phys = k.kho.allocPreserve(PAGE_SIZE);
    k.kho.addSubtree('luo', phys, 64);
    const folio = k.pages.allocPages(0);
    expect(k.kho.finalize()).not.toBeNull();
    expect(errnoOf(() => k.kho.preserveFolio(folio))).toBe('EBUSY');
    expect(errnoOf(() => k.kho.preservePages(folio.pfn, 1))).toBe('EBUSY');
    expect(errnoOf(() => k.kho.unpreserveFolio({ pfn: phys / PAGE_SIZE, order: 0 }))).toBe('EBUSY');
    expect(errnoOf(() => k.kho.unpreservePages(phys / PAGE_SIZE, 1))).toBe('EBUSY');
    expect(errnoOf(() => k.kho.allocPreserve(64))).toBe('EBUSY');
    expect(errnoOf(() => k.kho.unpreserveFree(phys))).toBe('EBUSY');
    expect(errnoOf(() => k.kho.addSubtree('other', phys, 64))).toBe('EBUSY');
    expect(errnoOf(() => k.kho.removeSubtree(phys))).toBe('EBUSY');
    expect(errnoOf(() => k.kho.finalize())).toBe('EBUSY');
  });

  it('gives back what it allocated and stays open when finalize runs out of memory', () => {
    const k = coldBoot();
    const folios = drain(k.pages);
    // One free frame: the root FDT gets it, the memory map page does not.
    k.pages.freePages(folios.pop()!);
    expect(errnoOf(() => k.kho.finalize())).toBe('ENOMEM');
    expect(k.pages.stats.free).toBe(1);
    k.kho.preserveFolio(folios[0]!);
    k.pages.freePages(folios.pop()!);
    const k2 = bootMemory(k.memory, 'kho=on', k.kho.finalize());
    expect(k2.kho.stats.unrestoredFolios).toBe(1);
  });

  it('reports every incoming subtree nobody retrieved, as an error naming it and its blob', () => {
    const { k2, small } = preserveAndKexec();
    expect(k2.kho.retrieveSubtree('luo').size).toBe(BLOB_SIZE);
    expect([...k2.kho.incomingSubtrees.keys()].sort()).toEqual(['luo', 'memfd.0']);
    k2.kho.reportUnclaimedSubtrees();
    const reported = k2.lines.filter((line) => line.includes('retrieved by no subsystem'));
    expect(reported).toEqual([
      `KHO: incoming subtree "memfd.0" (blob ${hex(small.pfn * PAGE_SIZE)}+${PAGE_SIZE}) was retrieved by no subsystem: its name is damaged or unknown to this kernel; its memory stays reserved until the last incoming session finishes, then is freed as unclaimed`,
    ]);
  });

  it('refuses to write a handover whose subtree blob is not all preserved memory', () => {
    const k = coldBoot();
    const phys = k.kho.allocPreserve(PAGE_SIZE);
    k.kho.addSubtree('luo', phys, PAGE_SIZE + 1);
    expect(errnoOf(() => k.kho.finalize())).toBe('EINVAL');
    k.kho.removeSubtree(phys);
    k.kho.addSubtree('luo', phys, PAGE_SIZE);
    expect(k.kho.finalize()).not.toBeNull();
  });
});

describe('KexecHandover: the root ABI it writes', () => {
  const reads = (...formats: string[]) => ({ reads: new Set(formats) });
  /** A kernel with one preserved 2-page blob published as "LUO", written for `target`. */
  function finalizeFor(target?: { reads: Set<string> }) {
    const k = coldBoot();
    const blob = k.kho.allocPreserve(2 * PAGE_SIZE);
    k.memory.fill(blob, 2 * PAGE_SIZE, 0x5c);
    k.kho.addSubtree('LUO', blob, 5000);
    const fdtPhys = k.kho.finalize(target)!;
    const { totalSize } = readFdtHeader(k.memory.read(fdtPhys, FDT_HEADER_SIZE));
    const root = decodeFdt(k.memory.read(fdtPhys, totalSize)).root;
    return { k, blob, fdtPhys, root };
  }

  it.each([
    ['no loaded kernel', undefined],
    ['a kernel that reads both', reads('kho-v2', 'kho-v1')],
    ['a kernel that reads only kho-v2', reads('kho-v2')],
    ['a kernel that reads neither (the kexec check refuses it first)', reads('luo-v2')],
  ])('writes kho-v2, checksummed, for %s', (_what, target) => {
    const { k, blob, fdtPhys, root } = finalizeFor(target);
    expect(readString(root, 'compatible')).toBe('kho-v2');
    const luo = root.children.find((c) => c.name === 'LUO')!;
    expect(readU32(luo, 'blob-crc')).toBe(crc32c(k.memory.read(blob, 5000)));
    const k2 = bootMemory(k.memory, 'kho=on', fdtPhys);
    expect(k2.incoming!.compatible).toBe('kho-v2');
    expect(k2.lines.join('\n')).not.toMatch(/carries no checksums/);
  });

  it('writes kho-v1, without checksums, for a kernel that reads only kho-v1', () => {
    const { k, fdtPhys, root } = finalizeFor(reads('kho-v1', 'luo-v1'));
    expect(readString(root, 'compatible')).toBe('kho-v1');
    expect(root.properties.map((p) => p.name)).toEqual([
      'compatible',
      'preserved-memory-map',
      'scratch-phys',
      'scratch-len',
    ]);
    expect(root.children[0]!.properties.map((p) => p.name)).toEqual([
      'preserved-data',
      'blob-size',
    ]);
    expect(k.lines.join('\n')).toMatch(/KHO: handover \(kho-v1\) at 0x[0-9a-f]+/);
    // This kernel reads it too, and warns that nothing in it is checksummed.
    const k2 = bootMemory(k.memory, 'kho=on', fdtPhys);
    expect(k2.incoming!.compatible).toBe('kho-v1');
    expect(k2.incoming!.subtrees.get('LUO')!.size).toBe(5000);
    expect(k2.lines).toContain('KHO: the incoming handover is kho-v1: it carries no checksums');
  });

  it('writes the memory map in address order, whatever order the folios were preserved in', () => {
    const k = coldBoot();
    const folios = [2, 0, 5, 1, 3].map((order) => k.pages.allocPages(order));
    const byAddress = [...folios].sort((a, b) => a.pfn - b.pfn);
    for (const folio of [...byAddress].reverse()) k.kho.preserveFolio(folio);
    const fdtPhys = k.kho.finalize()!;
    const { totalSize } = readFdtHeader(k.memory.read(fdtPhys, FDT_HEADER_SIZE));
    const root = decodeFdt(k.memory.read(fdtPhys, totalSize)).root;
    const mapPhys = Number(readU64(root, KHO_PROP_MEMORY_MAP, { littleEndian: true }));
    const written = readKhoMemoryMap(k.memory, mapPhys, MAX_PAGE_ORDER, null).folios;
    // Each preserved folio once, with the root FDT's folio and the map page, all by address.
    const expected = [
      ...byAddress,
      { pfn: fdtPhys / PAGE_SIZE, order: 0 },
      { pfn: mapPhys / PAGE_SIZE, order: 0 },
    ].sort((a, b) => a.pfn - b.pfn);
    expect(written).toEqual(expected.map(({ pfn, order }) => ({ pfn, order })));
  });
});
