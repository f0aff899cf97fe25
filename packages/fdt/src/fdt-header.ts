import { FdtError } from './fdt-error.js';

/** The magic number that opens every flattened device tree (big-endian `d0 0d fe ed`). */
export const FDT_MAGIC = 0xd00dfeed;

/** Size of the version 17 header: ten big-endian u32 fields. */
export const FDT_HEADER_SIZE = 40;

/** Version written by the encoder. */
export const FDT_VERSION = 17;

/** `last_comp_version` written by the encoder: version 16 readers can read our blobs. */
export const FDT_LAST_COMPATIBLE_VERSION = 16;

/** Oldest version the decoder reads; older layouts differ (no strings size, no `boot_cpuid`). */
export const FDT_OLDEST_READABLE_VERSION = 16;

/** Byte offsets of the header fields, in spec order. */
export const FdtHeaderField = {
  magic: 0,
  totalSize: 4,
  structOffset: 8,
  stringsOffset: 12,
  memReserveOffset: 16,
  version: 20,
  lastCompatibleVersion: 24,
  bootCpuId: 28,
  stringsSize: 32,
  structSize: 36,
} as const;

/** The 40-byte header of a flattened device tree, field by field (all unsigned 32-bit). */
export interface FdtHeader {
  /** Always {@link FDT_MAGIC}. */
  magic: number;
  /** Size of the whole blob in bytes, header included. */
  totalSize: number;
  /** Offset of the structure block from the start of the blob. */
  structOffset: number;
  /** Offset of the strings block. */
  stringsOffset: number;
  /** Offset of the memory reservation block. */
  memReserveOffset: number;
  /** Format version (17 for blobs we write). */
  version: number;
  /** Oldest version this blob stays compatible with (16 for blobs we write). */
  lastCompatibleVersion: number;
  /** Physical id of the boot CPU. */
  bootCpuId: number;
  /** Size of the strings block in bytes. */
  stringsSize: number;
  /** Size of the structure block in bytes (not meaningful before version 17). */
  structSize: number;
}

/**
 * Reads and checks the header, so a caller holding only the first 40 bytes learns `totalSize`
 * before fetching the rest. It checks the magic, the version pair and that `totalSize` covers at
 * least the header; it does not compare `totalSize` with `bytes.length` nor check the blocks
 * (`decodeFdt` does both).
 *
 * @throws FdtError `BAD_MAGIC`, `TRUNCATED` (fewer than 40 bytes), `BAD_VERSION`, `BAD_LAYOUT`
 */
export function readFdtHeader(bytes: Uint8Array): FdtHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Look at the magic first: "not an FDT at all" is more useful than "too short".
  if (bytes.length >= 4 && view.getUint32(0) !== FDT_MAGIC) {
    const found = view.getUint32(0).toString(16).padStart(8, '0');
    throw new FdtError('BAD_MAGIC', `bad magic 0x${found}, expected 0xd00dfeed`, { offset: 0 });
  }
  if (bytes.length < FDT_HEADER_SIZE) {
    throw new FdtError(
      'TRUNCATED',
      `blob of ${bytes.length} bytes is shorter than the ${FDT_HEADER_SIZE}-byte header`,
      { offset: bytes.length },
    );
  }
  const field = (offset: number): number => view.getUint32(offset);
  const header: FdtHeader = {
    magic: field(FdtHeaderField.magic),
    totalSize: field(FdtHeaderField.totalSize),
    structOffset: field(FdtHeaderField.structOffset),
    stringsOffset: field(FdtHeaderField.stringsOffset),
    memReserveOffset: field(FdtHeaderField.memReserveOffset),
    version: field(FdtHeaderField.version),
    lastCompatibleVersion: field(FdtHeaderField.lastCompatibleVersion),
    bootCpuId: field(FdtHeaderField.bootCpuId),
    stringsSize: field(FdtHeaderField.stringsSize),
    structSize: field(FdtHeaderField.structSize),
  };
  if (header.version < FDT_OLDEST_READABLE_VERSION) {
    throw new FdtError(
      'BAD_VERSION',
      `version ${header.version} is older than ${FDT_OLDEST_READABLE_VERSION}, the oldest supported`,
      { offset: FdtHeaderField.version },
    );
  }
  if (header.lastCompatibleVersion > FDT_VERSION) {
    throw new FdtError(
      'BAD_VERSION',
      `last compatible version ${header.lastCompatibleVersion} is newer than ${FDT_VERSION}, the newest supported`,
      { offset: FdtHeaderField.lastCompatibleVersion },
    );
  }
  if (header.lastCompatibleVersion > header.version) {
    throw new FdtError(
      'BAD_VERSION',
      `last compatible version ${header.lastCompatibleVersion} is newer than the version ${header.version}`,
      { offset: FdtHeaderField.lastCompatibleVersion },
    );
  }
  if (header.totalSize < FDT_HEADER_SIZE) {
    throw new FdtError(
      'BAD_LAYOUT',
      `total size ${header.totalSize} is smaller than the ${FDT_HEADER_SIZE}-byte header`,
      { offset: FdtHeaderField.totalSize },
    );
  }
  return header;
}
