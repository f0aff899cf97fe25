import {
  KHO_VMALLOC_ALLOC,
  KernelError,
  MAX_PAGE_ORDER,
  PAGE_SIZE,
  getOrder,
  khoReadVmalloc,
  type Folio,
  type KexecHandover,
} from '@liveupdate/kernel';
import { hex, type PhysicalMemory } from '@liveupdate/machine';
import { pagesFor } from './memfd-inode.js';
import {
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_UPTODATE,
  memfdLuoFolioSer,
  memfdLuoSer,
  unpackPfnFlags,
} from './memfd-luo-abi.js';

/** Preserved memfds are limited to `UINT_MAX` pages (`EFBIG` at preserve), as in Linux. */
export const MAX_PRESERVED_PAGES = 0xffff_ffff;
/** The order of the folio holding a `memfd_luo_ser`. */
export const MEMFD_LUO_SER_ORDER = getOrder(memfdLuoSer.size);
/** The flags memfd-v2's writer gives every folio. */
const FOLIO_FLAGS = MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE;

/** A folio of a preserved memfd, read back: its place in the file, its frames and its order. */
export interface PreservedFolio {
  readonly index: number;
  readonly pfn: number;
  readonly order: number;
}

/** A preserved memfd as {@link readPreservedMemfd} found it, every field checked. */
export interface PreservedMemfd {
  readonly size: number;
  readonly pos: number;
  /** As written; seals or flags this kernel does not know are the handler's to refuse. */
  readonly seals: number;
  readonly flags: number;
  /** Sorted by index; they tile `[0, size)`. */
  readonly folios: readonly PreservedFolio[];
  /** The folios holding `memfd_luo_folio_ser[]` and the `kho_vmalloc_chunk`s listing them. */
  readonly arrayFolios: readonly Folio[];
}

/**
 * Read the `memfd_luo_ser` at `serPhys` and its folio array without restoring anything, and refuse
 * every value memfd-v2's writer cannot produce. Two errnos, by where the damage is:
 *
 * - `EINVAL`: `memfd_luo_ser` itself — `size` beyond `UINT_MAX` pages or RAM, `pos` beyond the
 *   largest offset, `nr_folios` 0 for a non-empty file (or not 0 for an empty one) or more than
 *   its pages, a `folios` (`kho_vmalloc`) description that is not the one the writer makes for
 *   `nr_folios` entries (order 0, `KHO_VMALLOC_ALLOC`, exactly the pages they need, zeros after the
 *   last entry), or a chain KHO does not hold (see `khoReadVmalloc`);
 * - `EIO`: a `memfd_luo_folio_ser` entry — flags other than `DIRTY | UPTODATE`, pfn 0 or outside
 *   RAM, indexes that do not tile `[0, size)` from 0 with aligned power-of-two folios, a pfn not
 *   aligned to its folio, frames listed twice in this file, or a folio KHO does not hold with the
 *   order its place implies (upstream's `EIO` for a folio it cannot restore).
 *
 * The message names the structure, its address, the field and the value.
 */
export function readPreservedMemfd(
  ctx: { readonly memory: PhysicalMemory; readonly kho: KexecHandover },
  serPhys: number,
): PreservedMemfd {
  const { memory, kho } = ctx;
  const ser = memfdLuoSer.decode(memory.read(serPhys, memfdLuoSer.size));
  const where = `memfd_luo_ser at ${hex(serPhys)}`;
  const invalid = (what: string): never => {
    throw new KernelError('EINVAL', `memfd: ${where}: ${what}`);
  };
  const maxPages = Math.min(MAX_PRESERVED_PAGES, memory.frames);
  if (ser.size > BigInt(maxPages) * BigInt(PAGE_SIZE)) {
    invalid(`size ${ser.size} is more than the ${maxPages} pages a preserved memfd can have here`);
  }
  if (ser.pos > BigInt(Number.MAX_SAFE_INTEGER)) invalid(`pos ${ser.pos} is beyond any offset`);
  const size = Number(ser.size);
  const endPage = pagesFor(size);
  const { nrFolios, folios: array } = ser;
  if ((nrFolios === 0n) !== (endPage === 0) || nrFolios > BigInt(endPage)) {
    invalid(`nr_folios ${nrFolios} for size ${size} (${endPage} pages)`);
  }
  const count = Number(nrFolios);
  if (count === 0) {
    if (array.first !== 0n || array.totalPages !== 0 || array.flags !== 0 || array.order !== 0) {
      invalid(
        `folios (first ${hex(array.first)}, total_pages ${array.totalPages}, flags ${hex(array.flags)}, order ${array.order}) for no folios`,
      );
    }
    return {
      size,
      pos: Number(ser.pos),
      seals: ser.seals,
      flags: ser.flags,
      folios: [],
      arrayFolios: [],
    };
  }
  const arrayPages = Math.ceil((count * memfdLuoFolioSer.size) / PAGE_SIZE);
  if (array.order !== 0 || array.flags !== KHO_VMALLOC_ALLOC || array.totalPages !== arrayPages) {
    invalid(
      `folios (total_pages ${array.totalPages}, flags ${hex(array.flags)}, order ${array.order}) is not the array of ${count} entries (${arrayPages} pages, flags ${hex(KHO_VMALLOC_ALLOC)}, order 0)`,
    );
  }
  if (array.first >= BigInt(memory.size))
    invalid(`folios.first ${hex(array.first)} is outside RAM`);
  let contents;
  try {
    contents = khoReadVmalloc(ctx, { ...array, first: Number(array.first) });
  } catch (error) {
    return invalid(`folios: ${(error as Error).message}`);
  }
  const used = count * memfdLuoFolioSer.size;
  if (contents.data.subarray(used).some((byte) => byte !== 0)) {
    invalid(`the folio array holds bytes after its ${count} entries`);
  }

  const folios: PreservedFolio[] = [];
  const entries = Array.from({ length: count }, (_, i) => {
    const entry = memfdLuoFolioSer.decode(contents.data, i * memfdLuoFolioSer.size);
    return { ...unpackPfnFlags(entry.pfnFlags), index: entry.index };
  });
  entries.forEach(({ pfn, flags, index }, i) => {
    const bad = (what: string): never => {
      throw new KernelError('EIO', `memfd: ${where}: memfd_luo_folio_ser[${i}]: ${what}`);
    };
    if (flags !== FOLIO_FLAGS) {
      bad(`flags ${hex(flags)}, not DIRTY|UPTODATE (${hex(FOLIO_FLAGS)})`);
    }
    if (pfn === 0) bad('pfn 0');
    if (i === 0 && index !== 0n) bad(`index ${index}: the first folio must be at page 0`);
    const end = i + 1 < count ? entries[i + 1]!.index : BigInt(endPage);
    if (end <= index) bad(`index ${index} is not below the next folio's (or the end's) ${end}`);
    const extent = Number(end - index);
    const order = Math.log2(extent);
    if (!Number.isInteger(order) || order > MAX_PAGE_ORDER || Number(index) % extent !== 0) {
      bad(`index ${index} to the next folio's ${end} is ${extent} pages, not an aligned folio`);
    }
    if (pfn % extent !== 0 || pfn + extent > memory.frames) {
      bad(`pfn ${hex(pfn)} is not an order-${order} folio in RAM`);
    }
    const preserved = kho.incomingOrder(pfn * PAGE_SIZE);
    if (preserved !== order) {
      bad(
        `pfn ${hex(pfn)} order ${order} ${preserved === undefined ? 'was not preserved or is already restored' : `was preserved with order ${preserved}`}`,
      );
    }
    folios.push({ index: Number(index), pfn, order });
  });
  checkDisjoint(where, folios, contents.folios);
  return {
    size,
    pos: Number(ser.pos),
    seals: ser.seals,
    flags: ser.flags,
    folios,
    arrayFolios: contents.folios,
  };
}

/** `EIO` when a frame of this memfd is listed twice: by two entries, or by an entry and the array. */
function checkDisjoint(
  where: string,
  folios: readonly PreservedFolio[],
  arrayFolios: readonly Folio[],
): void {
  const all = [
    ...folios.map((f, i) => ({ ...f, what: `memfd_luo_folio_ser[${i}]` })),
    ...arrayFolios.map((f) => ({ ...f, what: 'the folio array' })),
  ].sort((a, b) => a.pfn - b.pfn);
  all.forEach((folio, i) => {
    const next = all[i + 1];
    if (next && next.pfn < folio.pfn + 2 ** folio.order) {
      throw new KernelError(
        'EIO',
        `memfd: ${where}: ${next.what} at pfn ${hex(next.pfn)} lies in ${folio.what} (pfn ${hex(folio.pfn)} order ${folio.order})`,
      );
    }
  });
}
