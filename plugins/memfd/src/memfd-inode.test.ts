import { describe, expect, it } from 'vitest';
import type { Folio, PageAllocator } from '@liveupdate/kernel';
import { PAGE_SIZE, PhysicalMemory } from '@liveupdate/machine';
import type { PreservedRun } from './memfd-format.js';
import { MemfdInode } from './memfd-inode.js';

/**
 * The page allocator as far as the inode uses it: folios handed out from frame 0x4000 up, and
 * what was freed.
 */
function fakePages(): { pages: PageAllocator; freed: Folio[]; allocated: Folio[] } {
  const freed: Folio[] = [];
  const allocated: Folio[] = [];
  let next = 0x4000;
  const pages = {
    allocPages(order: number): Folio {
      const folio = { pfn: next, order };
      next += 2 ** order;
      allocated.push(folio);
      return folio;
    },
    freePages(folio: Folio): void {
      freed.push(folio);
    },
    isPinned: () => false,
  } as unknown as PageAllocator;
  return { pages, freed, allocated };
}

const memory = new PhysicalMemory(new SharedArrayBuffer(0x8000 * PAGE_SIZE));

/** An inode of `size` bytes holding `runs` as a retrieve leaves it. */
function retrieved(
  runs: PreservedRun[],
  size: number,
): ReturnType<typeof fakePages> & {
  inode: MemfdInode;
} {
  const fake = fakePages();
  const inode = new MemfdInode(1, '', 0, fake.pages, memory);
  inode.size = size;
  for (const run of runs) inode.adoptRun(run);
  return { inode, ...fake };
}

// Three runs: the first two follow each other in RAM (one segment), the third lies elsewhere.
const RUNS: PreservedRun[] = [
  { index: 0, pfn: 0x1000, nrFolios: 3, order: 9 },
  { index: 1536, pfn: 0x1600, nrFolios: 4, order: 0 },
  { index: 1540, pfn: 0x2000, nrFolios: 2, order: 2 },
];
const SIZE = 1548 * PAGE_SIZE;

describe('a memfd inode holding adopted runs', () => {
  it('puts every folio of every run in the page cache on first use', () => {
    const { inode } = retrieved(RUNS, SIZE);
    expect(inode.nrFolios).toBe(9);
    expect(inode.folios().map(({ index, folio }) => [index, folio.pfn, folio.order])).toEqual([
      [0, 0x1000, 9],
      [512, 0x1200, 9],
      [1024, 0x1400, 9],
      [1536, 0x1600, 0],
      [1537, 0x1601, 0],
      [1538, 0x1602, 0],
      [1539, 0x1603, 0],
      [1540, 0x2000, 2],
      [1544, 0x2004, 2],
    ]);
    expect(inode.lookup(1545)).toEqual({ index: 1544, folio: { pfn: 0x2004, order: 2 } });
  });

  it('maps any range of the runs as the page cache walked folio by folio would', () => {
    const ranges: [number, number][] = [
      [0, SIZE],
      [0, 1],
      [PAGE_SIZE, 2 * 512 * PAGE_SIZE],
      [1535 * PAGE_SIZE, 3 * PAGE_SIZE + 7],
      [1539 * PAGE_SIZE, 2 * PAGE_SIZE],
      [1544 * PAGE_SIZE, 4 * PAGE_SIZE],
    ];
    const { inode: runs, allocated } = retrieved(RUNS, SIZE);
    const { inode: walked } = retrieved(RUNS, SIZE);
    walked.folios(); // every folio is in its page cache now
    for (const [offset, length] of ranges) {
      expect(runs.segments(offset, length), `${offset}+${length}`).toEqual(
        walked.segments(offset, length),
      );
    }
    expect(runs.segments(0, SIZE)).toEqual([
      { phys: 0x1000 * PAGE_SIZE, length: 1540 * PAGE_SIZE },
      { phys: 0x2000 * PAGE_SIZE, length: 8 * PAGE_SIZE },
    ]);
    expect(allocated).toEqual([]);
  });

  it('fills a hole between runs, and past the last, as any memfd does', () => {
    const runs = [RUNS[0]!, { index: 1540, pfn: 0x2000, nrFolios: 1, order: 2 }];
    const { inode, allocated } = retrieved(runs, 1544 * PAGE_SIZE);
    const segments = inode.segments(1534 * PAGE_SIZE, 12 * PAGE_SIZE);
    // The hole (pages 1536–1539) gets a folio of order 2; past the end, order-0 pages.
    expect(allocated).toEqual([
      { pfn: 0x4000, order: 2 },
      { pfn: 0x4004, order: 0 },
      { pfn: 0x4005, order: 0 },
    ]);
    expect(segments).toEqual([
      { phys: (0x1000 + 1534) * PAGE_SIZE, length: 2 * PAGE_SIZE },
      { phys: 0x4000 * PAGE_SIZE, length: 4 * PAGE_SIZE },
      { phys: 0x2000 * PAGE_SIZE, length: 4 * PAGE_SIZE },
      { phys: 0x4004 * PAGE_SIZE, length: 2 * PAGE_SIZE },
    ]);
    expect(inode.nrFolios).toBe(7);
  });

  it('frees each folio of its runs when evicted, mapped or not', () => {
    const { inode, freed } = retrieved(RUNS, SIZE);
    inode.segments(0, SIZE);
    inode.evict();
    expect(freed).toHaveLength(9);
    expect(freed).toContainEqual({ pfn: 0x1400, order: 9 });
    expect(freed).toContainEqual({ pfn: 0x2004, order: 2 });
    expect(inode.nrFolios).toBe(0);
  });
});
