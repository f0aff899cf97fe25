import { defineStruct, u32, u64 } from '@liveupdate/core';

/**
 * The compatible of the handler and of the layout below. The next kernel hands a preserved file
 * only to a handler that reads exactly this string: change it whenever the layout changes.
 */
export const VALUE_LUO_COMPATIBLE = '__NAME__-v1';

/**
 * `struct value_luo_ser` (24 bytes, `__NAME__-v1`), alone in a preserved page whose physical
 * address is the file's `serializedData`. The value itself is not copied: `data` is the file's
 * own page, preserved in place.
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 8 | `data`: phys of the value's page |
 * | 8 | 8 | `length`: bytes of the value, 0 to 4096 |
 * | 16 | 4 | `flags`: the file's access mode (`O_RDONLY`, `O_WRONLY` or `O_RDWR`); no other bit |
 * | 20 | 4 | `reserved`: 0 |
 */
export const valueLuoSer = defineStruct('value_luo_ser', [
  ['data', u64],
  ['length', u64],
  ['flags', u32],
  ['reserved', u32],
] as const);
