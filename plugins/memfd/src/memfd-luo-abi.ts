import { defineStruct, u16, u32, u64, type FieldType, type StructCodec } from '@liveupdate/core';
import {
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
} from '@liveupdate/machine';

/**
 * The memfd handler's ABI (`include/linux/kho/abi/memfd.h`), newest layout: memfd-v3, whose
 * folios are listed as runs ({@link memfdLuoSerV3}). Change the compatible string whenever a
 * layout below changes: the next kernel matches it exactly.
 */
export const MEMFD_LUO_FH_COMPATIBLE = 'memfd-v3';

/**
 * The previous layout, memfd-v2 (one entry per folio, {@link memfdLuoSer}), as the plugin of
 * kernel 6.18.0 writes it. Still read, and written for a kernel that reads only it.
 */
export const MEMFD_LUO_FH_COMPATIBLE_V2 = 'memfd-v2';

/** The seals memfd-v2 and v3 carry over; a memfd with any other bit is refused (`EOPNOTSUPP`). */
export const MEMFD_LUO_ALL_SEALS =
  F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC;

/** `memfd_luo_folio_ser.flags` and `memfd_luo_run_ser.flags`: the folio was dirty. */
export const MEMFD_LUO_FOLIO_DIRTY = 1 << 0;
/** `memfd_luo_folio_ser.flags` and `memfd_luo_run_ser.flags`: the folio's contents are valid. */
export const MEMFD_LUO_FOLIO_UPTODATE = 1 << 1;

/** A struct used as a field of another (C's nested struct member). */
function nested<T>(codec: StructCodec<T>): FieldType<T> {
  const at = (view: DataView, offset: number): Uint8Array =>
    new Uint8Array(view.buffer, view.byteOffset + offset, codec.size);
  return {
    size: codec.size,
    read: (view, offset) => codec.decode(at(view, offset)),
    write: (view, offset, value) => codec.encodeInto(at(view, offset), 0, value),
  };
}

/**
 * `struct kho_vmalloc` (16 bytes; `include/linux/kho/abi/kexec_handover.h`), how a preserved
 * vmalloc area is found (see `khoPreserveVmalloc` in `@liveupdate/kernel`):
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 8 | `first`: phys of the first `kho_vmalloc_chunk`, 0 for none |
 * | 8 | 4 | `total_pages` |
 * | 12 | 2 | `flags`: `KHO_VMALLOC_ALLOC`, `KHO_VMALLOC_HUGE_VMAP` |
 * | 14 | 2 | `order` of each page run |
 */
export const khoVmallocSer = defineStruct('kho_vmalloc', [
  ['first', u64],
  ['totalPages', u32],
  ['flags', u16],
  ['order', u16],
] as const);

/**
 * `struct memfd_luo_ser` (48 bytes, memfd-v2), in one preserved page whose physical address is
 * the file's `serialized_data`:
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 8 | `pos`: the file position |
 * | 8 | 8 | `size`: `i_size` |
 * | 16 | 4 | `seals`: `F_SEAL_*` bits |
 * | 20 | 4 | `flags`: unused, 0 |
 * | 24 | 8 | `nr_folios` |
 * | 32 | 16 | `folios`: a {@link khoVmallocSer} holding `memfd_luo_folio_ser[nr_folios]` |
 */
export const memfdLuoSer = defineStruct('memfd_luo_ser', [
  ['pos', u64],
  ['size', u64],
  ['seals', u32],
  ['flags', u32],
  ['nrFolios', u64],
  ['folios', nested(khoVmallocSer)],
] as const);

/**
 * `struct memfd_luo_folio_ser` (16 bytes), one per folio, sorted by index:
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 8 | `pfn:52` (bits 0–51) and `flags:12` (bits 52–63), see {@link packPfnFlags}; pfn 0 is skipped |
 * | 8 | 8 | `index`: the folio's first page in the file |
 */
export const memfdLuoFolioSer = defineStruct('memfd_luo_folio_ser', [
  ['pfnFlags', u64],
  ['index', u64],
] as const);

const PFN_BITS = 52n;
const PFN_MASK = (1n << PFN_BITS) - 1n;

/** `memfd_luo_folio_ser`'s first u64 from its two bitfields. */
export function packPfnFlags(pfn: number, flags: number): bigint {
  if (!Number.isSafeInteger(pfn) || pfn < 0 || BigInt(pfn) > PFN_MASK) {
    throw new RangeError(`memfd_luo_folio_ser: pfn ${pfn} does not fit 52 bits`);
  }
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xfff) {
    throw new RangeError(`memfd_luo_folio_ser: flags ${flags} do not fit 12 bits`);
  }
  return BigInt(pfn) | (BigInt(flags) << PFN_BITS);
}

/** The two bitfields of `memfd_luo_folio_ser`'s first u64. */
export function unpackPfnFlags(pfnFlags: bigint): { pfn: number; flags: number } {
  return { pfn: Number(pfnFlags & PFN_MASK), flags: Number(pfnFlags >> PFN_BITS) };
}

/**
 * `struct memfd_luo_ser` of memfd-v3 (56 bytes), in one preserved page whose physical address is
 * the file's `serialized_data`. memfd-v2's header with `nr_folios` become `nr_runs`, the count of
 * {@link memfdLuoRunSer} entries, and a checksum of the run array: LUO's `data_crc` covers this
 * page only, and the runs lie in a KHO vmalloc area beside it.
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 8 | `pos`: the file position |
 * | 8 | 8 | `size`: `i_size` |
 * | 16 | 4 | `seals`: `F_SEAL_*` bits |
 * | 20 | 4 | `flags`: unused, 0 |
 * | 24 | 8 | `nr_runs` |
 * | 32 | 16 | `runs`: a {@link khoVmallocSer} holding `memfd_luo_run_ser[nr_runs]` |
 * | 48 | 4 | `runs_crc`: CRC32C of the `nr_runs` × 24 bytes of run entries (0 for none) |
 * | 52 | 4 | `reserved`: 0 |
 */
export const memfdLuoSerV3 = defineStruct('memfd_luo_ser', [
  ['pos', u64],
  ['size', u64],
  ['seals', u32],
  ['flags', u32],
  ['nrRuns', u64],
  ['runs', nested(khoVmallocSer)],
  ['runsCrc', u32],
  ['reserved', u32],
] as const);

/**
 * `struct memfd_luo_run_ser` (24 bytes, memfd-v3), one per run of folios that follow each other
 * both in the file and in physical memory, with the same order and flags; sorted by index. Folio
 * `k` of a run (`k < nr_folios`) is at page `index + k * 2^order` of the file and frame
 * `pfn + k * 2^order`. A file of folios allocated contiguously needs a handful of runs where
 * memfd-v2 lists every folio.
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 8 | `pfn`: the first folio's first frame |
 * | 8 | 8 | `index`: the first folio's first page in the file |
 * | 16 | 4 | `nr_folios`: at least 1 |
 * | 20 | 2 | `order` of every folio of the run |
 * | 22 | 2 | `flags`: `MEMFD_LUO_FOLIO_DIRTY`, `MEMFD_LUO_FOLIO_UPTODATE` |
 */
export const memfdLuoRunSer = defineStruct('memfd_luo_run_ser', [
  ['pfn', u64],
  ['index', u64],
  ['nrFolios', u32],
  ['order', u16],
  ['flags', u16],
] as const);
