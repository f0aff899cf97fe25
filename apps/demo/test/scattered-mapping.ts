import { PAGE_SIZE, type MemoryMapping } from '@liveupdate/machine';

/**
 * A mapping of `pages` zeroed pages, each its own buffer, as a memfd's folios may lie apart in
 * RAM: a table's slots then straddle segments, which the table must handle. For unit tests.
 */
export function scatteredMapping(pages: number): MemoryMapping {
  const segments = Array.from({ length: pages }, (_, page) => ({
    offset: page * PAGE_SIZE,
    phys: (pages - page) * PAGE_SIZE * 2,
    bytes: new Uint8Array(PAGE_SIZE),
  }));
  return { address: 0x7f00_0000_0000, length: pages * PAGE_SIZE, segments };
}
