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
 * The memfd handler's ABI (`include/linux/kho/abi/memfd.h`, memfd-v2). Change the compatible
 * string whenever a layout below changes: the next kernel matches it exactly.
 */
export const MEMFD_LUO_FH_COMPATIBLE = 'memfd-v2';

/** The seals memfd-v2 carries over; a memfd with any other bit is refused (`EOPNOTSUPP`). */
export const MEMFD_LUO_ALL_SEALS =
  F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC;

/** `memfd_luo_folio_ser.flags`: the folio was dirty. */
export const MEMFD_LUO_FOLIO_DIRTY = 1 << 0;
/** `memfd_luo_folio_ser.flags`: the folio's contents are valid. */
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
