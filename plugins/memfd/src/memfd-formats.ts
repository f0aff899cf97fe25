import { KernelError } from '@liveupdate/kernel';
import type { MemfdFormat, MemfdReadContext, PreservedMemfd } from './memfd-format.js';
import { memfdV2Format } from './memfd-v2-format.js';
import { memfdV3Format } from './memfd-v3-format.js';

const FORMATS: readonly MemfdFormat[] = [memfdV3Format, memfdV2Format];

/** The layout named `compatible` (`"memfd-v3"` or `"memfd-v2"`); `EINVAL` for another. */
export function memfdFormat(compatible: string): MemfdFormat {
  const format = FORMATS.find((f) => f.compatible === compatible);
  if (!format) throw new KernelError('EINVAL', `memfd: no layout "${compatible}"`);
  return format;
}

/**
 * Read the `memfd_luo_ser` at `serPhys`, written as `compatible` (memfd-v3 unless told), and its
 * entries without restoring anything, refusing every value that layout's writer cannot produce.
 * Two errnos, by where the damage is:
 *
 * - `EINVAL`: `memfd_luo_ser` itself — `size` beyond `UINT_MAX` pages or RAM, `pos` beyond the
 *   largest offset, the entry count (`nr_runs`, or memfd-v2's `nr_folios`) 0 for a non-empty file
 *   (or not 0 for an empty one) or more than its pages, an entry array description that is not
 *   the one the writer makes for that many entries (order 0, `KHO_VMALLOC_ALLOC`, exactly the
 *   pages they need, zeros after the last entry), or a chain KHO does not hold;
 * - `EIO`: an entry (`memfd_luo_run_ser`, or memfd-v2's `memfd_luo_folio_ser`) — flags other than
 *   `DIRTY | UPTODATE`, a run of 0 folios, an order above `MAX_PAGE_ORDER`, indexes that do not
 *   tile `[0, size)` from 0 in order with folios aligned to their order, pfn 0, a pfn not aligned
 *   to its order or a run crossing the end of RAM, frames listed twice in this file, a folio KHO
 *   does not hold with its order, or (memfd-v3) two entries its writer would have made one run.
 *
 * The message names the structure, its address, the entry, the field and the value.
 */
export function readPreservedMemfd(
  ctx: MemfdReadContext,
  serPhys: number,
  compatible: string = memfdV3Format.compatible,
): PreservedMemfd {
  return memfdFormat(compatible).read(ctx, serPhys);
}
