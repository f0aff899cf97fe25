import { defineStruct, u32, u64 } from '@liveupdate/core';
import { RINGBUF_OVERWRITE } from './ringbuf-uapi.js';

/**
 * The compatible of the handler and of the layout below. The next kernel hands a preserved
 * buffer only to a handler with exactly this string: change it whenever the layout changes.
 */
export const RINGBUF_LUO_FH_COMPATIBLE = 'ringbuf-v1';

/** The buffer flags `ringbuf-v1` carries; another bit in `ringbuf_luo_ser.flags` is `EOPNOTSUPP`. */
export const RINGBUF_LUO_FLAGS = RINGBUF_OVERWRITE;

/**
 * `struct ringbuf_luo_ser` (64 bytes, `ringbuf-v1`), alone in a preserved page whose physical
 * address is the file's `serializedData`. The records themselves stay where they are: `data` is
 * the buffer's own folio, preserved in place.
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 8 | `size`: bytes of the buffer, a power of two from 4 KiB to 4 MiB |
 * | 8 | 8 | `data`: phys of the buffer's folio (order `log2(size / 4096)`) |
 * | 16 | 8 | `head`: producer position |
 * | 24 | 8 | `tail`: consumer position; `head - tail <= size` |
 * | 32 | 8 | `records`: unread records between `tail` and `head` |
 * | 40 | 8 | `dropped`: records overwritten so far |
 * | 48 | 8 | `live_updates`: live updates before this one |
 * | 56 | 4 | `flags`: {@link RINGBUF_LUO_FLAGS} bits |
 * | 60 | 4 | `reserved`: 0 |
 *
 * Positions count bytes from the buffer's creation and never wrap; the byte at position `p` is at
 * offset `p % size` of the folio.
 */
export const ringbufLuoSer = defineStruct('ringbuf_luo_ser', [
  ['size', u64],
  ['data', u64],
  ['head', u64],
  ['tail', u64],
  ['records', u64],
  ['dropped', u64],
  ['liveUpdates', u64],
  ['flags', u32],
  ['reserved', u32],
] as const);
