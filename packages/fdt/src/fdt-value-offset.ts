import type { FdtProperty } from './fdt-node.js';

// A checksum stored inside the blob it covers (computed with its own value zeroed) needs the
// value's place in the blob. decodeFdt remembers it per property; a weak map keeps it off the
// public objects, as node paths are kept.
const valueOffsets = new WeakMap<FdtProperty, number>();

/** Records that `property`'s value starts at byte `offset` of the blob it was decoded from. */
export function rememberValueOffset(property: FdtProperty, offset: number): void {
  valueOffsets.set(property, offset);
}

/**
 * The byte offset of `property`'s value in the blob `decodeFdt` read it from, or `undefined` for
 * a property built by hand (or changed to a new object since). With it a reader can find a value
 * in the raw blob: to check a checksum that covers the whole blob with that value zeroed.
 */
export function fdtValueOffset(property: FdtProperty): number | undefined {
  return valueOffsets.get(property);
}
