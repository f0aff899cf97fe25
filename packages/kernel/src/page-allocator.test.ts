import 'reflect-metadata';
import { describe, expect, it } from 'vitest';
import { KernelError, PAGE_SIZE, PhysicalMemory } from '@liveupdate/machine';
import { CommandLine } from './command-line.js';
import type { KhoIncoming } from './kho/kho-incoming.js';
import { KernelLog } from './kernel-log.js';
import { planMemoryLayout, type MemoryLayout } from './memory-layout.js';
import {
  MAX_PAGE_ORDER,
  PAGE_POISON,
  PageAllocator,
  alignedChunks,
  getOrder,
  type Folio,
} from './page-allocator.js';
import { errnoOf } from '../test/errno-of.js';

const MiB = 1024 * 1024;
const RAM = 16 * MiB;
/** 16 MiB of 4 KiB frames. */
const FRAMES = RAM / PAGE_SIZE;
/** The first 1 MiB. */
const FIRMWARE_FRAMES = MiB / PAGE_SIZE;
/** 4096 frames × 2 bytes of struct page = 8 KiB. */
const MEMMAP_FRAMES = 2;
/** Default scratch on 16 MiB: max(4 MiB, 16 MiB / 64) = 4 MiB, right above firmware. */
const SCRATCH = { pfn: FIRMWARE_FRAMES, frames: (4 * MiB) / PAGE_SIZE };
const SCRATCH_END = SCRATCH.pfn + SCRATCH.frames;

interface Booted {
  memory: PhysicalMemory;
  layout: MemoryLayout;
  pages: PageAllocator;
  log: string[];
}

function boot(
  text: string,
  options: { memory?: PhysicalMemory; incoming?: KhoIncoming | null } = {},
): Booted {
  const memory = options.memory ?? PhysicalMemory.allocate(RAM);
  const incoming = options.incoming ?? null;
  const cmdline = new CommandLine(text);
  const log: string[] = [];
  const kernelLog = new KernelLog((message) => {
    if (message.type === 'log') log.push(message.text);
  }, KernelLog.now());
  const layout = planMemoryLayout(
    memory,
    cmdline,
    cmdline.bool('kho', false),
    incoming?.scratch ?? null,
  );
  const pages = new PageAllocator(memory, layout, incoming, cmdline, kernelLog);
  return { memory, layout, pages, log };
}

/** Allocate order-0 folios until ENOMEM. */
function drain(pages: PageAllocator, order = 0): Folio[] {
  const folios: Folio[] = [];
  for (;;) {
    try {
      folios.push(pages.allocPages(order));
    } catch (error) {
      if (KernelError.isInstance(error) && error.code === 'ENOMEM') return folios;
      throw error;
    }
  }
}

/** Whether every byte of frames `[pfn, pfn + frames)` equals `value`. */
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

/** A deterministic shuffle, so frees do not happen in allocation order. */
function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  let seed = 12345;
  for (let i = out.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function expectStatsAddUp(pages: PageAllocator): void {
  const { total, free, allocated, reserved, scratch } = pages.stats;
  expect(free + allocated + reserved + scratch).toBe(total);
}

describe('PageAllocator', () => {
  describe('boot', () => {
    it('without KHO reserves firmware and the memory map and frees everything else', () => {
      const { pages } = boot('');
      expect(pages.stats).toEqual({
        total: FRAMES,
        free: FRAMES - FIRMWARE_FRAMES - MEMMAP_FRAMES,
        allocated: 0,
        reserved: FIRMWARE_FRAMES + MEMMAP_FRAMES,
        scratch: 0,
      });
    });

    it('with KHO reserves firmware, keeps scratch (holding the memory map) apart and frees the rest', () => {
      const { pages } = boot('kho=on');
      expect(pages.stats).toEqual({
        total: FRAMES,
        free: FRAMES - FIRMWARE_FRAMES - SCRATCH.frames,
        allocated: 0,
        reserved: FIRMWARE_FRAMES,
        scratch: SCRATCH.frames,
      });
      expect(pages.overlapsScratch(SCRATCH.pfn, 1)).toBe(true);
      expect(pages.overlapsScratch(SCRATCH_END - 1, 1)).toBe(true);
      expect(pages.overlapsScratch(SCRATCH_END, 100)).toBe(false);
      expect(pages.overlapsScratch(0, FIRMWARE_FRAMES)).toBe(false);
      expect(pages.overlapsScratch(SCRATCH.pfn - 1, 2)).toBe(true);
    });

    it('logs the available memory in KiB', () => {
      const { pages, log } = boot('kho=on');
      expect(log.join('\n')).toContain(`Memory: ${pages.stats.free * 4}K/${FRAMES * 4}K available`);
    });

    it('hands the free range to the buddy lists in the largest naturally aligned blocks', () => {
      // With KHO on, [1280, 4096) is free: 1280 is only 256-aligned, 1536 is 512-aligned, and 2048
      // and 3072 start whole 1024-frame blocks.
      const { pages } = boot('kho=on');
      const got = [10, 10, 9, 8].map((order) => pages.allocPages(order));
      expect(got.map((f) => f.pfn).sort((a, b) => a - b)).toEqual([1280, 1536, 2048, 3072]);
      expect(pages.stats.free).toBe(0);
    });
  });

  describe('allocPages', () => {
    it.each([false, true])(
      'returns aligned folios of every order outside firmware and scratch (kho=%s)',
      (kho) => {
        const { pages } = boot(kho ? 'kho=on' : '');
        const firstFree = kho ? SCRATCH_END : FIRMWARE_FRAMES + MEMMAP_FRAMES;
        let allocated = 0;
        for (let order = 0; order <= MAX_PAGE_ORDER; order++) {
          const before = pages.stats.free;
          const folio = pages.allocPages(order);
          allocated += 2 ** order;
          expect(folio.order).toBe(order);
          expect(folio.pfn % 2 ** order).toBe(0);
          expect(folio.pfn).toBeGreaterThanOrEqual(firstFree);
          expect(folio.pfn + 2 ** order).toBeLessThanOrEqual(FRAMES);
          expect(pages.isAllocated(folio.pfn, order)).toBe(true);
          expect(pages.stats.free).toBe(before - 2 ** order);
          expect(pages.stats.allocated).toBe(allocated);
          expectStatsAddUp(pages);
        }
      },
    );

    it('hands out every free frame exactly once and then fails with ENOMEM', () => {
      const { pages } = boot('kho=on');
      const free = pages.stats.free;
      const folios = drain(pages);
      expect(folios).toHaveLength(free);
      const pfns = new Set(folios.map((f) => f.pfn));
      expect(pfns.size).toBe(free);
      for (const pfn of pfns) {
        expect(pfn >= SCRATCH_END && pfn < FRAMES).toBe(true);
      }
      expect(pages.stats).toMatchObject({ free: 0, allocated: free });
      expect(errnoOf(() => pages.allocPages(0))).toBe('ENOMEM');
    });

    it('fails with ENOMEM for an order larger than any free block even when enough frames are free', () => {
      const { pages } = boot('kho=on');
      const folios = drain(pages);
      // Free every other frame: half of memory is free, but no two free frames are buddies.
      const byPfn = [...folios].sort((a, b) => a.pfn - b.pfn);
      for (const folio of byPfn) if (folio.pfn % 2 === 0) pages.freePages(folio);
      expect(pages.stats.free).toBe(folios.length / 2);
      expect(errnoOf(() => pages.allocPages(1))).toBe('ENOMEM');
      expect(errnoOf(() => pages.allocPages(0))).toBeUndefined();
    });

    it.each([-1, MAX_PAGE_ORDER + 1, 1.5, Number.NaN])('rejects order %s with EINVAL', (order) => {
      const { pages } = boot('');
      const before = pages.stats;
      expect(errnoOf(() => pages.allocPages(order))).toBe('EINVAL');
      expect(pages.stats).toEqual(before);
    });

    it('zeroes the folio when asked to and leaves old bytes otherwise', () => {
      const memory = PhysicalMemory.allocate(RAM);
      memory.fill(0, RAM, 0x55);
      const { pages } = boot('', { memory });
      const dirty = pages.allocPages(2);
      expect(framesFilledWith(memory, dirty.pfn, 4, 0x55)).toBe(true);
      const zeroed = pages.allocPages(2, { zero: true });
      expect(framesFilledWith(memory, zeroed.pfn, 4, 0)).toBe(true);
    });
  });

  describe('freePages', () => {
    it('coalesces buddies so that freeing everything restores the boot-time blocks', () => {
      const { pages } = boot('kho=on');
      const boot0 = pages.stats;
      const folios = drain(pages);
      for (const folio of shuffled(folios)) pages.freePages(folio);
      expect(pages.stats).toEqual(boot0);
      // Only full coalescing gives back both 1024-frame blocks of [1280, 4096).
      const big = [pages.allocPages(MAX_PAGE_ORDER), pages.allocPages(MAX_PAGE_ORDER)];
      expect(big.map((f) => f.pfn).sort((a, b) => a - b)).toEqual([2048, 3072]);
      expect(errnoOf(() => pages.allocPages(MAX_PAGE_ORDER))).toBe('ENOMEM');
    });

    it('coalesces folios of mixed orders back into a max-order block', () => {
      const { pages } = boot('kho=on');
      const folios: Folio[] = [];
      for (let order = MAX_PAGE_ORDER; order >= 0; order--) {
        for (let i = 0; i < 3; i++) {
          try {
            folios.push(pages.allocPages(order));
          } catch (error) {
            if (!(KernelError.isInstance(error) && error.code === 'ENOMEM')) throw error;
          }
        }
      }
      folios.push(...drain(pages));
      expect(pages.stats.free).toBe(0);
      for (const folio of shuffled(folios)) pages.freePages(folio);
      expect(pages.allocPages(MAX_PAGE_ORDER).order).toBe(MAX_PAGE_ORDER);
      expect(pages.allocPages(MAX_PAGE_ORDER).order).toBe(MAX_PAGE_ORDER);
    });

    it('keeps the totals adding up through allocation and freeing', () => {
      const { pages } = boot('');
      const folios = [0, 3, 7, 1, 10, 0].map((order) => pages.allocPages(order));
      expectStatsAddUp(pages);
      expect(pages.stats.allocated).toBe(1 + 8 + 128 + 2 + 1024 + 1);
      for (const folio of folios.slice(0, 3)) pages.freePages(folio);
      expectStatsAddUp(pages);
      expect(pages.stats.allocated).toBe(2 + 1024 + 1);
    });

    it('rejects a folio that is not allocated, or not with that order, and changes nothing', () => {
      const memory = PhysicalMemory.allocate(RAM);
      const { pages } = boot('page_poison=on', { memory });
      const folio = pages.allocPages(2);
      memory.fill(folio.pfn * PAGE_SIZE, 4 * PAGE_SIZE, 0x42);
      const before = pages.stats;
      const bad: Folio[] = [
        { pfn: folio.pfn, order: 1 },
        { pfn: folio.pfn, order: 3 },
        { pfn: folio.pfn + 1, order: 0 },
        { pfn: folio.pfn + 2, order: 1 },
        { pfn: 0, order: 0 },
        { pfn: FIRMWARE_FRAMES, order: 0 },
        { pfn: FRAMES, order: 0 },
        { pfn: -1, order: 0 },
        { pfn: 1.5, order: 0 },
      ];
      const freeFrame = pages.allocPages(0);
      pages.freePages(freeFrame);
      bad.push(freeFrame);
      const reference = pages.stats;
      expect(reference).toEqual(before);
      for (const candidate of bad) {
        expect(
          errnoOf(() => pages.freePages(candidate)),
          JSON.stringify(candidate),
        ).toBe('EINVAL');
      }
      expect(pages.stats).toEqual(before);
      expect(pages.isAllocated(folio.pfn, 2)).toBe(true);
      expect(framesFilledWith(memory, folio.pfn, 4, 0x42)).toBe(true);
      pages.freePages(folio);
      expect(errnoOf(() => pages.freePages(folio))).toBe('EINVAL');
    });
  });

  describe('page_poison', () => {
    it('fills every free frame and the firmware area with 0xaa at boot', () => {
      const memory = PhysicalMemory.allocate(RAM);
      memory.fill(0, RAM, 0x11);
      const { pages } = boot('page_poison=on', { memory });
      expect(pages.poisoning).toBe(true);
      expect(PAGE_POISON).toBe(0xaa);
      const firstFree = FIRMWARE_FRAMES + MEMMAP_FRAMES;
      expect(framesFilledWith(memory, firstFree, FRAMES - firstFree, 0xaa)).toBe(true);
      // Nothing a previous kernel hid in firmware memory survives a debug boot.
      expect(framesFilledWith(memory, 0, FIRMWARE_FRAMES, 0xaa)).toBe(true);
      expect(framesFilledWith(memory, FIRMWARE_FRAMES, MEMMAP_FRAMES, 0xaa)).toBe(false);
    });

    it('with KHO poisons scratch above the memory map as well as the free frames', () => {
      const memory = PhysicalMemory.allocate(RAM);
      memory.fill(0, RAM, 0x11);
      boot('kho=on page_poison=on', { memory });
      const memmapEnd = SCRATCH.pfn + MEMMAP_FRAMES;
      expect(framesFilledWith(memory, memmapEnd, FRAMES - memmapEnd, 0xaa)).toBe(true);
      expect(framesFilledWith(memory, 0, FIRMWARE_FRAMES, 0xaa)).toBe(true);
    });

    it('leaves free frames untouched when off', () => {
      const memory = PhysicalMemory.allocate(RAM);
      memory.fill(0, RAM, 0x11);
      const { pages } = boot('page_poison=off', { memory });
      expect(pages.poisoning).toBe(false);
      expect(framesFilledWith(memory, SCRATCH_END, FRAMES - SCRATCH_END, 0x11)).toBe(true);
      expect(framesFilledWith(memory, 0, FIRMWARE_FRAMES, 0x11)).toBe(true);
    });

    it('poisons a folio when it is freed', () => {
      const memory = PhysicalMemory.allocate(RAM);
      const { pages } = boot('page_poison=on', { memory });
      const folio = pages.allocPages(3, { zero: true });
      expect(framesFilledWith(memory, folio.pfn, 8, 0)).toBe(true);
      memory.fill(folio.pfn * PAGE_SIZE, 8 * PAGE_SIZE, 0x33);
      pages.freePages(folio);
      expect(framesFilledWith(memory, folio.pfn, 8, 0xaa)).toBe(true);
    });

    it('does not poison freed folios when off', () => {
      const memory = PhysicalMemory.allocate(RAM);
      const { pages } = boot('', { memory });
      const folio = pages.allocPages(1);
      memory.fill(folio.pfn * PAGE_SIZE, 2 * PAGE_SIZE, 0x33);
      pages.freePages(folio);
      expect(framesFilledWith(memory, folio.pfn, 2, 0x33)).toBe(true);
    });
  });

  describe('incoming KHO folios', () => {
    const preserved: Folio[] = [
      { pfn: 2048, order: 3 },
      { pfn: 1300, order: 0 },
    ];
    const incoming = (): KhoIncoming => ({
      compatible: 'kho-v2',
      fdtPhys: 1300 * PAGE_SIZE,
      scratch: SCRATCH,
      folios: preserved,
      handoverFolios: [],
      subtrees: new Map(),
    });

    it('are reserved at boot, never allocated and never poisoned', () => {
      const memory = PhysicalMemory.allocate(RAM);
      memory.fill(2048 * PAGE_SIZE, 8 * PAGE_SIZE, 0x77);
      memory.fill(1300 * PAGE_SIZE, PAGE_SIZE, 0x78);
      const { pages } = boot('kho=on page_poison=on', { memory, incoming: incoming() });
      expect(pages.stats).toEqual({
        total: FRAMES,
        free: FRAMES - FIRMWARE_FRAMES - SCRATCH.frames - 9,
        allocated: 0,
        reserved: FIRMWARE_FRAMES + 9,
        scratch: SCRATCH.frames,
      });
      expect(framesFilledWith(memory, 2048, 8, 0x77)).toBe(true);
      expect(framesFilledWith(memory, 1300, 1, 0x78)).toBe(true);
      const handedOut = new Set(drain(pages).map((f) => f.pfn));
      for (let pfn = 2048; pfn < 2056; pfn++) expect(handedOut.has(pfn)).toBe(false);
      expect(handedOut.has(1300)).toBe(false);
      expect(handedOut.size).toBe(pages.stats.allocated);
    });

    it('become allocated folios through adoptReserved and merge with their buddies when freed', () => {
      const { pages } = boot('kho=on', { incoming: incoming() });
      pages.adoptReserved({ pfn: 2048, order: 3 });
      expect(pages.isAllocated(2048, 3)).toBe(true);
      expect(pages.stats).toMatchObject({ reserved: FIRMWARE_FRAMES + 1, allocated: 8 });
      expectStatsAddUp(pages);
      pages.freePages({ pfn: 2048, order: 3 });
      expect(pages.stats).toMatchObject({ reserved: FIRMWARE_FRAMES + 1, allocated: 0 });
      // 2048 o3 merged up to 2048 o10; only 3072 was a whole block before.
      const big = [pages.allocPages(MAX_PAGE_ORDER), pages.allocPages(MAX_PAGE_ORDER)];
      expect(big.map((f) => f.pfn).sort((a, b) => a - b)).toEqual([2048, 3072]);
    });

    it('cannot be adopted twice, nor can free, allocated or partly reserved frames', () => {
      const { pages } = boot('kho=on', { incoming: incoming() });
      const allocated = pages.allocPages(0);
      const free = pages.allocPages(0);
      pages.freePages(free);
      pages.adoptReserved({ pfn: 1300, order: 0 });
      const before = pages.stats;
      for (const folio of [
        { pfn: 1300, order: 0 },
        free,
        allocated,
        { pfn: 2048, order: 4 },
        { pfn: SCRATCH.pfn + 4, order: 2 },
      ]) {
        expect(
          errnoOf(() => pages.adoptReserved(folio)),
          JSON.stringify(folio),
        ).toBe('EINVAL');
      }
      expect(pages.stats).toEqual(before);
      expect(pages.isAllocated(2048, 3)).toBe(false);
      pages.adoptReserved({ pfn: 2048, order: 3 });
      expect(pages.isAllocated(2048, 3)).toBe(true);
    });
  });
});

describe('incoming KHO folios contiguous in RAM', () => {
  // A run of folios of mixed orders that follow each other in RAM, a lone one, and one right
  // above scratch: given unsorted, as a test can; the kernel's reader sorts them.
  const run: Folio[] = [
    { pfn: 2056, order: 3 },
    { pfn: 2048, order: 3 },
    { pfn: 2064, order: 4 },
    { pfn: 2080, order: 5 },
    { pfn: 3001, order: 0 },
    { pfn: SCRATCH_END, order: 2 },
  ];
  const frames = run.reduce((sum, f) => sum + 2 ** f.order, 0);
  const incoming = (): KhoIncoming => ({
    compatible: 'kho-v2',
    fdtPhys: 3001 * PAGE_SIZE,
    scratch: SCRATCH,
    folios: run,
    handoverFolios: [],
    subtrees: new Map(),
  });

  it('are reserved frame for frame: every other frame is handed out, none of theirs', () => {
    const { pages } = boot('kho=on', { incoming: incoming() });
    expect(pages.stats.reserved).toBe(FIRMWARE_FRAMES + frames);
    const handedOut = drain(pages);
    const taken = new Set<number>();
    for (const folio of handedOut) taken.add(folio.pfn);
    for (const folio of run) {
      for (let pfn = folio.pfn; pfn < folio.pfn + 2 ** folio.order; pfn++) {
        expect(taken.has(pfn), `preserved pfn ${pfn} was handed out`).toBe(false);
      }
    }
    // The neighbours of the run are free memory: handed out.
    for (const pfn of [2047, 2112, 3000, 3002, SCRATCH_END + 4]) {
      expect(taken.has(pfn), `free pfn ${pfn}`).toBe(true);
    }
    expect(taken.size).toBe(FRAMES - FIRMWARE_FRAMES - SCRATCH.frames - frames);
  });

  it('keep each head and its order until adopted: reservedOrder reads it from the memory map', () => {
    const { pages } = boot('kho=on', { incoming: incoming() });
    for (const folio of run) expect(pages.reservedOrder(folio.pfn)).toBe(folio.order);
    for (const pfn of [2049, 2063, 2047, 2112, 0, SCRATCH.pfn, FRAMES, -1, 1.5]) {
      expect(pages.reservedOrder(pfn), `pfn ${pfn}`).toBeUndefined();
    }
    pages.adoptReserved({ pfn: 2064, order: 4 });
    expect(pages.reservedOrder(2064)).toBeUndefined();
    expect(pages.frameState(2064)).toBe('allocated');
    expect(pages.frameState(2063)).toBe('preserved');
    expect(pages.frameState(2080)).toBe('preserved');
  });
});

describe('adoptReservedRun', () => {
  const run: Folio[] = [
    { pfn: 2048, order: 3 },
    { pfn: 2056, order: 3 },
    { pfn: 2064, order: 4 },
    { pfn: 2080, order: 5 },
  ];
  const incoming = (): KhoIncoming => ({
    compatible: 'kho-v2',
    fdtPhys: 2048 * PAGE_SIZE,
    scratch: SCRATCH,
    folios: run,
    handoverFolios: [],
    subtrees: new Map(),
  });

  it('adopts every folio of a run of one order in one call, as adoptReserved one by one', () => {
    const { pages } = boot('kho=on', { incoming: incoming() });
    const before = pages.stats;
    pages.adoptReservedRun(2048, 2, 3);
    expect(pages.isAllocated(2048, 3) && pages.isAllocated(2056, 3)).toBe(true);
    expect(pages.reservedOrder(2064)).toBe(4);
    expect(pages.stats).toMatchObject({
      reserved: before.reserved - 16,
      allocated: before.allocated + 16,
    });
    expectStatsAddUp(pages);
    pages.freePages({ pfn: 2056, order: 3 });
    pages.adoptReservedRun(2064, 0, 4);
    expect(pages.reservedOrder(2064)).toBe(4);
  });

  it('adopts nothing when one folio of the run is not reserved with that order, and names it', () => {
    const { pages } = boot('kho=on', { incoming: incoming() });
    const before = pages.stats;
    // 2064 is an order-4 folio, 2080 is not: order 5.
    let message = '';
    try {
      pages.adoptReservedRun(2064, 2, 4);
    } catch (error) {
      expect(KernelError.isInstance(error) && error.code).toBe('EINVAL');
      message = (error as Error).message;
    }
    expect(message).toContain(`0x${(2080 * PAGE_SIZE).toString(16)} order 4`);
    expect(pages.reservedOrder(2064)).toBe(4);
    expect(pages.stats).toEqual(before);
    for (const [pfn, count, order] of [
      [2048, 1, 4],
      [2048, -1, 3],
      [2048, 1.5, 3],
      [-8, 1, 3],
      [FRAMES, 1, 0],
    ] as const) {
      expect(errnoOf(() => pages.adoptReservedRun(pfn, count, order))).toBe('EINVAL');
    }
    // The run is walked once, each head taken as it is checked: the two order-3 folios taken
    // before 2064 turns out not to be one are put back.
    expect(errnoOf(() => pages.adoptReservedRun(2048, 3, 3))).toBe('EINVAL');
    expect([pages.reservedOrder(2048), pages.reservedOrder(2056)]).toEqual([3, 3]);
    expect(pages.tryAdoptReservedRun(2048, 3, 3)).toBe(2);
    expect(pages.tryAdoptReservedRun(2048, -1, 3)).toBe(0);
    expect(pages.reservedOrder(2048)).toBe(3);
    expect(pages.stats).toEqual(before);
    pages.adoptReservedRun(2048, 2, 3);
    expect(pages.isAllocated(2048, 3) && pages.isAllocated(2056, 3)).toBe(true);
  });
});

describe('isAllocatedRange', () => {
  it('is true exactly for ranges whose every frame lies in an allocated folio', () => {
    const { pages } = boot('kho=on', {
      incoming: {
        compatible: 'kho-v2',
        fdtPhys: 2048 * PAGE_SIZE,
        scratch: SCRATCH,
        folios: [{ pfn: 2048, order: 3 }],
        handoverFolios: [],
        subtrees: new Map(),
      },
    });
    const big = pages.allocPages(4);
    const next = pages.allocPages(4);
    const small = pages.allocPages(0);
    // Whole folios, a tail inside one, and a range across two adjacent ones.
    expect(pages.isAllocatedRange(big.pfn, 16)).toBe(true);
    expect(pages.isAllocatedRange(big.pfn + 5, 7)).toBe(true);
    expect(pages.isAllocatedRange(small.pfn, 1)).toBe(true);
    const [low, high] = big.pfn < next.pfn ? [big, next] : [next, big];
    expect(high.pfn).toBe(low.pfn + 16);
    expect(pages.isAllocatedRange(low.pfn + 9, 16)).toBe(true);
    // One frame past the last allocated one, a freed folio, a reserved (preserved) one.
    expect(pages.isAllocatedRange(high.pfn + 15, 2)).toBe(high.pfn + 16 === small.pfn);
    pages.freePages(small);
    expect(pages.isAllocatedRange(small.pfn, 1)).toBe(false);
    expect(pages.isAllocatedRange(high.pfn, 17)).toBe(false);
    expect(pages.isAllocatedRange(2048, 8)).toBe(false);
    pages.adoptReservedRun(2048, 1, 3);
    expect(pages.isAllocatedRange(2050, 6)).toBe(true);
  });
});

describe('getOrder', () => {
  it.each([
    [1, 0],
    [PAGE_SIZE, 0],
    [PAGE_SIZE + 1, 1],
    [2 * PAGE_SIZE, 1],
    [3 * PAGE_SIZE, 2],
    [4 * MiB, 10],
    [4 * MiB + 1, 11],
  ])('a size of %d bytes needs a folio of order %d', (size, order) => {
    expect(getOrder(size)).toBe(order);
  });
});

describe('alignedChunks', () => {
  it.each<[number, number, Folio[]]>([
    [0, 1, [{ pfn: 0, order: 0 }]],
    [0, 1024, [{ pfn: 0, order: 10 }]],
    [
      0,
      4096,
      [
        { pfn: 0, order: 10 },
        { pfn: 1024, order: 10 },
        { pfn: 2048, order: 10 },
        { pfn: 3072, order: 10 },
      ],
    ],
    [
      3,
      13,
      [
        { pfn: 3, order: 0 },
        { pfn: 4, order: 2 },
        { pfn: 8, order: 3 },
      ],
    ],
    [
      1023,
      3,
      [
        { pfn: 1023, order: 0 },
        { pfn: 1024, order: 1 },
      ],
    ],
    [
      1280,
      2816,
      [
        { pfn: 1280, order: 8 },
        { pfn: 1536, order: 9 },
        { pfn: 2048, order: 10 },
        { pfn: 3072, order: 10 },
      ],
    ],
    [
      0,
      3000,
      [
        { pfn: 0, order: 10 },
        { pfn: 1024, order: 10 },
        { pfn: 2048, order: 9 },
        { pfn: 2560, order: 8 },
        { pfn: 2816, order: 7 },
        { pfn: 2944, order: 5 },
        { pfn: 2976, order: 4 },
        { pfn: 2992, order: 3 },
      ],
    ],
    [
      17,
      14,
      [
        { pfn: 17, order: 0 },
        { pfn: 18, order: 1 },
        { pfn: 20, order: 2 },
        { pfn: 24, order: 2 },
        { pfn: 28, order: 1 },
        { pfn: 30, order: 0 },
      ],
    ],
    [5, 0, []],
  ])('cuts %d+%d into the expected chunks', (pfn, count, expected) => {
    expect(alignedChunks(pfn, count)).toEqual(expected);
  });

  it('always covers the range exactly with maximal aligned chunks of at most MAX_PAGE_ORDER', () => {
    let seed = 7;
    const next = (limit: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % limit;
    };
    for (let i = 0; i < 100; i++) {
      const pfn = next(10_000);
      const count = 1 + next(5_000);
      let cursor = pfn;
      for (const { pfn: start, order } of alignedChunks(pfn, count)) {
        const size = 2 ** order;
        expect(start).toBe(cursor);
        expect(order).toBeLessThanOrEqual(MAX_PAGE_ORDER);
        expect(start % size).toBe(0);
        // Maximal: the next order up is misaligned, too long, or beyond MAX_PAGE_ORDER.
        const canGrow =
          order < MAX_PAGE_ORDER && start % (2 * size) === 0 && start + 2 * size <= pfn + count;
        expect(canGrow).toBe(false);
        cursor += size;
      }
      expect(cursor).toBe(pfn + count);
    }
  });

  describe('pinning', () => {
    it('counts pinned frames, refuses to free a pinned folio, and frees it once every pin is dropped', () => {
      const { pages } = boot('kho=on');
      const folio = pages.allocPages(2);
      pages.pin(folio);
      pages.pin(folio);
      expect(pages.pinnedFrames).toBe(4);
      expect(errnoOf(() => pages.freePages(folio))).toBe('EBUSY');
      pages.unpin(folio);
      expect(errnoOf(() => pages.freePages(folio))).toBe('EBUSY');
      pages.unpin(folio);
      expect(pages.pinnedFrames).toBe(0);
      pages.freePages(folio);
      expect(errnoOf(() => pages.unpin(folio))).toBe('EINVAL');
    });

    it('pins only allocated folios, with their own order', () => {
      const { pages } = boot('kho=on');
      const folio = pages.allocPages(1);
      expect(errnoOf(() => pages.pin({ pfn: folio.pfn, order: 0 }))).toBe('EINVAL');
      pages.freePages(folio);
      expect(errnoOf(() => pages.pin(folio))).toBe('EINVAL');
      expect(pages.pinnedFrames).toBe(0);
    });
  });
});
