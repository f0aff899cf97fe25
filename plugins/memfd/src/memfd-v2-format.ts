import { KernelError, MAX_PAGE_ORDER } from '@liveupdate/kernel';
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
import {
  MEMFD_LUO_FH_COMPATIBLE_V2,
  memfdLuoFolioSer,
  memfdLuoSer,
  packPfnFlags,
  unpackPfnFlags,
} from './memfd-luo-abi.js';

const decodeSer = (memory: PhysicalMemory, serPhys: number) =>
  memfdLuoSer.decode(memory.read(serPhys, memfdLuoSer.size));

/**
 * memfd-v2: `memfd_luo_ser` and one `memfd_luo_folio_ser` per folio. An entry records no order
 * (Linux reads it from the restored page): holes are filled and no folio crosses the end, so the
 * folios tile `[0, size)` and a folio's order is log2 of the distance to the next one's index (or
 * to the end), then checked as memfd-v3's explicit orders are.
 */
export const memfdV2Format: MemfdFormat = {
  compatible: MEMFD_LUO_FH_COMPATIBLE_V2,

  read(ctx, serPhys) {
    const ser = decodeSer(ctx.memory, serPhys);
    const where = `memfd_luo_ser at ${hex(serPhys)}`;
    const entries = readMemfdEntries(
      ctx,
      where,
      {
        ...ser,
        count: ser.nrFolios,
        countName: 'nr_folios',
        array: ser.folios,
        arrayName: 'folios',
      },
      memfdLuoFolioSer.size,
    );
    const bad =
      (i: number) =>
      (what: string): never => {
        throw new KernelError('EIO', `memfd: ${where}: memfd_luo_folio_ser[${i}]: ${what}`);
      };
    const raw = Array.from({ length: entries.count }, (_, i) => {
      const entry = memfdLuoFolioSer.decode(entries.data, i * memfdLuoFolioSer.size);
      return { ...unpackPfnFlags(entry.pfnFlags), index: entry.index };
    });
    const runs = raw.map(({ pfn, flags, index }, i): PreservedRun => {
      checkFolioFlags(flags, bad(i));
      const end = i + 1 < raw.length ? raw[i + 1]!.index : BigInt(entries.endPage);
      if (end <= index)
        bad(i)(`index ${index} is not below the next folio's (or the end's) ${end}`);
      const extent = Number(end - index);
      const order = Math.log2(extent);
      if (!Number.isInteger(order) || order > MAX_PAGE_ORDER) {
        bad(i)(`index ${index} to the next folio's ${end} is ${extent} pages, not a folio`);
      }
      return { index: Number(index), pfn, nrFolios: 1, order };
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
    const array = new Uint8Array(state.folios.length * memfdLuoFolioSer.size);
    state.folios.forEach(({ index, folio }, i) => {
      memfdLuoFolioSer.encodeInto(array, i * memfdLuoFolioSer.size, {
        pfnFlags: packPfnFlags(folio.pfn, MEMFD_FOLIO_FLAGS),
        index: BigInt(index),
      });
    });
    return writeMemfdSer(ctx, MEMFD_LUO_FH_COMPATIBLE_V2, array, (serPhys, vmalloc) => {
      memfdLuoSer.encodeInto(ctx.memory.view(serPhys, memfdLuoSer.size), 0, {
        pos: BigInt(state.pos),
        size: BigInt(state.size),
        seals: state.seals,
        flags: 0,
        nrFolios: BigInt(state.folios.length),
        folios: vmallocField(vmalloc),
      });
    });
  },

  setPos(memory, serPhys, pos) {
    const ser = decodeSer(memory, serPhys);
    memfdLuoSer.encodeInto(memory.view(serPhys, memfdLuoSer.size), 0, { ...ser, pos: BigInt(pos) });
  },

  listed: (memory, serPhys) => `nr_folios ${decodeSer(memory, serPhys).nrFolios}`,
};
