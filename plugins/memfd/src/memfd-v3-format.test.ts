import { describe, expect, it } from 'vitest';
import { foliosToRuns } from './memfd-v3-format.js';

const folio = (index: number, pfn: number, order: number) => ({ index, folio: { pfn, order } });

describe('memfd-v3 runs', () => {
  it('joins folios that follow each other in the file and in memory with one order', () => {
    expect(foliosToRuns([folio(0, 0x200, 9), folio(512, 0x400, 9), folio(1024, 0x600, 9)])).toEqual(
      [{ index: 0, pfn: 0x200, nrFolios: 3, order: 9 }],
    );
  });

  it('starts a new run at a gap in memory, at another order, and keeps the file order', () => {
    expect(
      foliosToRuns([
        folio(0, 0x200, 9),
        folio(512, 0x800, 9), // not after 0x200's folio in memory
        folio(1024, 0xa00, 1), // another order, though next in memory
        folio(1026, 0xa02, 1),
        folio(1028, 0x10, 0),
      ]),
    ).toEqual([
      { index: 0, pfn: 0x200, nrFolios: 1, order: 9 },
      { index: 512, pfn: 0x800, nrFolios: 1, order: 9 },
      { index: 1024, pfn: 0xa00, nrFolios: 2, order: 1 },
      { index: 1028, pfn: 0x10, nrFolios: 1, order: 0 },
    ]);
  });

  it('makes no run of an empty file', () => {
    expect(foliosToRuns([])).toEqual([]);
  });
});
