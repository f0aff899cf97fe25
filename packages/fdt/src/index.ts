/**
 * Flattened Device Tree (DTB version 17) encoder and strict decoder.
 *
 * @packageDocumentation
 */
export type { Fdt, FdtReservation } from './fdt.js';
export type { FdtProperty, FdtNode } from './fdt-node.js';
export { fdtNode } from './fdt-node.js';
export type { FdtHeader } from './fdt-header.js';
export { FDT_MAGIC, FDT_HEADER_SIZE, readFdtHeader } from './fdt-header.js';
export type { FdtErrorCode, FdtErrorLocation } from './fdt-error.js';
export { FdtError } from './fdt-error.js';
export { encodeFdt } from './fdt-encoder.js';
export type { FdtDecodeOptions } from './fdt-decoder.js';
export { FDT_DEFAULT_MAX_DEPTH, decodeFdt } from './fdt-decoder.js';
export type { FdtU64Options } from './fdt-value.js';
export { fdtValue } from './fdt-value.js';
export { findNode } from './fdt-path.js';
export { fdtValueOffset } from './fdt-value-offset.js';
export { getProperty, readString, readStringList, readU32, readU64 } from './fdt-reader.js';
