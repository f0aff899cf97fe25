import { MAX_PAGE_ORDER } from '@liveupdate/kernel';
import {
  MEMFD_FOLIO_FLAGS,
  checkFolioFlags,
  defineMemfdFormat,
  type PreservedRun,
} from './memfd-format.js';
import {
  MEMFD_LUO_FH_COMPATIBLE_V2,
  memfdLuoFolioSer,
  memfdLuoSer,
  packPfnFlags,
  unpackPfnFlags,
} from './memfd-luo-abi.js';

/**
 * memfd-v2: `memfd_luo_ser` and one `memfd_luo_folio_ser` per folio. An entry records no order
 * (Linux reads it from the restored page): holes are filled and no folio crosses the end, so the
 * folios tile `[0, size)` and a folio's order is log2 of the distance to the next one's index (or
 * to the end), then checked as memfd-v3's explicit orders are.
 */
export const memfdV2Format = defineMemfdFormat({
  compatible: MEMFD_LUO_FH_COMPATIBLE_V2,
  countName: 'nr_folios',
  arrayName: 'folios',
  serSize: memfdLuoSer.size,
  decodeSer(bytes) {
    const { nrFolios, folios, ...rest } = memfdLuoSer.decode(bytes);
    // No checksum of the folio array in this layout: a value-only change to it goes unseen.
    return { ...rest, count: nrFolios, array: folios, arrayCrc: null, reserved: 0 };
  },
  encodeSer: ({ count, array, pos, size, seals, flags }) =>
    memfdLuoSer.encode({ pos, size, seals, flags, nrFolios: count, folios: array }),
  entryName: 'memfd_luo_folio_ser',
  entrySize: memfdLuoFolioSer.size,

  decodeRuns(data, count, endPage, bad) {
    const raw = Array.from({ length: count }, (_, i) => {
      const entry = memfdLuoFolioSer.decode(data, i * memfdLuoFolioSer.size);
      return { ...unpackPfnFlags(entry.pfnFlags), index: entry.index };
    });
    return raw.map(({ pfn, flags, index }, i): PreservedRun => {
      checkFolioFlags(flags, bad(i));
      const end = i + 1 < raw.length ? raw[i + 1]!.index : BigInt(endPage);
      if (end <= index) {
        bad(i)(`index ${index} is not below the next folio's (or the end's) ${end}`);
      }
      const extent = Number(end - index);
      const order = Math.log2(extent);
      if (!Number.isInteger(order) || order > MAX_PAGE_ORDER) {
        bad(i)(`index ${index} to the next folio's ${end} is ${extent} pages, not a folio`);
      }
      return { index: Number(index), pfn, nrFolios: 1, order };
    });
  },

  encodeEntries(folios) {
    const data = new Uint8Array(folios.length * memfdLuoFolioSer.size);
    folios.forEach(({ index, folio }, i) => {
      memfdLuoFolioSer.encodeInto(data, i * memfdLuoFolioSer.size, {
        pfnFlags: packPfnFlags(folio.pfn, MEMFD_FOLIO_FLAGS),
        index: BigInt(index),
      });
    });
    return { data, count: folios.length };
  },
});
