import { KernelError } from '@liveupdate/kernel';
import { hex, type PhysicalMemory } from '@liveupdate/machine';
import {
  MEMFD_FOLIO_FLAGS,
  checkFolioFlags,
  checkRuns,
  readMemfdEntries,
  vmallocField,
  writeMemfdSer,
  type MemfdFormat,
  type PreservedRun,
} from './memfd-format.js';
import type { MemfdFolio } from './memfd-inode.js';
import { MEMFD_LUO_FH_COMPATIBLE, memfdLuoRunSer, memfdLuoSerV3 } from './memfd-luo-abi.js';

const decodeSer = (memory: PhysicalMemory, serPhys: number) =>
  memfdLuoSerV3.decode(memory.read(serPhys, memfdLuoSerV3.size));

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
    if (last && continues(last, next))
      runs[runs.length - 1] = { ...last, nrFolios: last.nrFolios + 1 };
    else runs.push(next);
  }
  return runs;
}

/**
 * memfd-v3: `memfd_luo_ser` and one `memfd_luo_run_ser` per run of folios contiguous in the file
 * and in memory with one order. The writer makes the longest runs, so the reader also refuses two
 * entries that make one run, besides everything {@link checkRuns} refuses.
 */
export const memfdV3Format: MemfdFormat = {
  compatible: MEMFD_LUO_FH_COMPATIBLE,

  read(ctx, serPhys) {
    const ser = decodeSer(ctx.memory, serPhys);
    const where = `memfd_luo_ser at ${hex(serPhys)}`;
    const entries = readMemfdEntries(
      ctx,
      where,
      { ...ser, count: ser.nrRuns, countName: 'nr_runs', array: ser.runs, arrayName: 'runs' },
      memfdLuoRunSer.size,
    );
    const bad =
      (i: number) =>
      (what: string): never => {
        throw new KernelError('EIO', `memfd: ${where}: memfd_luo_run_ser[${i}]: ${what}`);
      };
    const runs = Array.from({ length: entries.count }, (_, i): PreservedRun => {
      const entry = memfdLuoRunSer.decode(entries.data, i * memfdLuoRunSer.size);
      checkFolioFlags(entry.flags, bad(i));
      if (entry.nrFolios === 0) bad(i)('nr_folios 0');
      if (entry.pfn > BigInt(Number.MAX_SAFE_INTEGER))
        bad(i)(`pfn ${hex(entry.pfn)} is outside RAM`);
      if (entry.index > BigInt(Number.MAX_SAFE_INTEGER))
        bad(i)(`index ${entry.index} is beyond any page`);
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
    checkRuns(ctx, runs, entries.endPage, entries.arrayFolios, bad);
    return {
      size: entries.size,
      pos: entries.pos,
      seals: ser.seals,
      flags: ser.flags,
      runs,
      arrayFolios: entries.arrayFolios,
    };
  },

  write(ctx, state) {
    const runs = foliosToRuns(state.folios);
    const array = new Uint8Array(runs.length * memfdLuoRunSer.size);
    runs.forEach(({ index, pfn, nrFolios, order }, i) => {
      memfdLuoRunSer.encodeInto(array, i * memfdLuoRunSer.size, {
        pfn: BigInt(pfn),
        index: BigInt(index),
        nrFolios,
        order,
        flags: MEMFD_FOLIO_FLAGS,
      });
    });
    return writeMemfdSer(ctx, MEMFD_LUO_FH_COMPATIBLE, array, (serPhys, vmalloc) => {
      memfdLuoSerV3.encodeInto(ctx.memory.view(serPhys, memfdLuoSerV3.size), 0, {
        pos: BigInt(state.pos),
        size: BigInt(state.size),
        seals: state.seals,
        flags: 0,
        nrRuns: BigInt(runs.length),
        runs: vmallocField(vmalloc),
      });
    });
  },

  setPos(memory, serPhys, pos) {
    const ser = decodeSer(memory, serPhys);
    memfdLuoSerV3.encodeInto(memory.view(serPhys, memfdLuoSerV3.size), 0, {
      ...ser,
      pos: BigInt(pos),
    });
  },

  listed: (memory, serPhys) => `nr_runs ${decodeSer(memory, serPhys).nrRuns}`,
};
