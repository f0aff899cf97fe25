import { hex } from '@liveupdate/machine';
import {
  MEMFD_FOLIO_FLAGS,
  checkFolioFlags,
  defineMemfdFormat,
  type PreservedRun,
} from './memfd-format.js';
import type { MemfdFolio } from './memfd-inode.js';
import { MEMFD_LUO_FH_COMPATIBLE, memfdLuoRunSer, memfdLuoSerV3 } from './memfd-luo-abi.js';

/** Whether `next` continues `run`: the next folio in the file and in memory, of the same order. */
function continues(run: PreservedRun, next: PreservedRun): boolean {
  const span = run.nrFolios * 2 ** run.order;
  return next.order === run.order && next.index === run.index + span && next.pfn === run.pfn + span;
}

/** The longest runs `folios` (sorted by index) make; every folio has the same flags. */
export function foliosToRuns(folios: readonly MemfdFolio[]): PreservedRun[] {
  const runs: PreservedRun[] = [];
  for (const { index, folio } of folios) {
    const next = { index, pfn: folio.pfn, nrFolios: 1, order: folio.order };
    const last = runs.at(-1);
    if (last && continues(last, next)) {
      runs[runs.length - 1] = { ...last, nrFolios: last.nrFolios + 1 };
    } else {
      runs.push(next);
    }
  }
  return runs;
}

/**
 * memfd-v3: `memfd_luo_ser` and one `memfd_luo_run_ser` per run of folios contiguous in the file
 * and in memory with one order, checksummed by `runs_crc`. The writer makes the longest runs, so
 * the reader also refuses two entries that make one run, besides everything `checkRuns` refuses.
 */
export const memfdV3Format = defineMemfdFormat({
  compatible: MEMFD_LUO_FH_COMPATIBLE,
  countName: 'nr_runs',
  arrayName: 'runs',
  arrayCrcName: 'runs_crc',
  serSize: memfdLuoSerV3.size,
  decodeSer(bytes) {
    const { nrRuns, runs, runsCrc, ...rest } = memfdLuoSerV3.decode(bytes);
    return { ...rest, count: nrRuns, array: runs, arrayCrc: runsCrc };
  },
  encodeSer: ({ count, array, arrayCrc, ...rest }) =>
    memfdLuoSerV3.encode({ ...rest, nrRuns: count, runs: array, runsCrc: arrayCrc ?? 0 }),
  entryName: 'memfd_luo_run_ser',
  entrySize: memfdLuoRunSer.size,

  decodeRuns(data, count, _endPage, bad) {
    const runs = Array.from({ length: count }, (_, i): PreservedRun => {
      const entry = memfdLuoRunSer.decode(data, i * memfdLuoRunSer.size);
      checkFolioFlags(entry.flags, bad(i));
      if (entry.nrFolios === 0) bad(i)('nr_folios 0');
      if (entry.pfn > BigInt(Number.MAX_SAFE_INTEGER)) {
        bad(i)(`pfn ${hex(entry.pfn)} is outside RAM`);
      }
      if (entry.index > BigInt(Number.MAX_SAFE_INTEGER)) {
        bad(i)(`index ${entry.index} is beyond any page`);
      }
      return {
        index: Number(entry.index),
        pfn: Number(entry.pfn),
        nrFolios: entry.nrFolios,
        order: entry.order,
      };
    });
    runs.forEach((run, i) => {
      const previous = runs[i - 1];
      if (previous && continues(previous, run)) {
        bad(i)(
          `pfn ${hex(run.pfn)} index ${run.index} order ${run.order} continues entry ${i - 1}: the writer makes one run of them`,
        );
      }
    });
    return runs;
  },

  encodeEntries(folios) {
    const runs = foliosToRuns(folios);
    const data = new Uint8Array(runs.length * memfdLuoRunSer.size);
    runs.forEach(({ index, pfn, nrFolios, order }, i) => {
      memfdLuoRunSer.encodeInto(data, i * memfdLuoRunSer.size, {
        pfn: BigInt(pfn),
        index: BigInt(index),
        nrFolios,
        order,
        flags: MEMFD_FOLIO_FLAGS,
      });
    });
    return { data, count: runs.length };
  },
});
