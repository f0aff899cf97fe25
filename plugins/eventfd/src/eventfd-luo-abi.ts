import { defineStruct, u32, u64 } from '@liveupdate/core';
import { EFD_CLOEXEC, EFD_NONBLOCK, EFD_SEMAPHORE } from '@liveupdate/machine';

/**
 * The compatible of the handler and of the layout below, the string upstream Linux gives its
 * eventfd handler. The next kernel hands a preserved eventfd only to a handler with exactly this
 * string: a change of layout needs a new one.
 */
export const EVENTFD_LUO_FH_COMPATIBLE = 'eventfd-v1';

/**
 * The `eventfd2` flags an `eventfd-v1` writer may set in `eventfd_luo_ser.flags`.
 * `EFD_SEMAPHORE` and `EFD_NONBLOCK` are the file's and cross the update. `EFD_CLOEXEC` belongs
 * to an fd, not to the file: this handler never writes it, and reads it as upstream's writer
 * means it, a flag the retrieved fd does not take (`RETRIEVE_FD` makes every fd close-on-exec).
 * Any other bit is `EINVAL` after the kexec.
 */
export const EVENTFD_LUO_FLAGS = EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC;

/**
 * `struct eventfd_luo_ser` (16 bytes, `eventfd-v1`), alone in a KHO-preserved page whose
 * physical address is the file's `serializedData`.
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 8 | `count`: the counter, any u64 (a kernel signal saturates it at `2^64 - 1`) |
 * | 8 | 4 | `flags`: `EFD_SEMAPHORE` (`0x1`), `EFD_NONBLOCK` (`0x800`); see {@link EVENTFD_LUO_FLAGS} |
 * | 12 | 4 | `reserved`: 0 |
 *
 * Upstream's struct is the first 12 bytes, packed; its writer's page comes zeroed from
 * `kho_alloc_preserve`, so what it leaves at offset 12 reads as a zero `reserved`.
 */
export const eventfdLuoSer = defineStruct('eventfd_luo_ser', [
  ['count', u64],
  ['flags', u32],
  ['reserved', u32],
] as const);
