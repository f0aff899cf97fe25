/**
 * The ring buffer's uAPI: the flags of `ringbuf_create`, the layout of a record in the buffer, and
 * the stats ioctl. Shared by the kernel side and the userspace helpers.
 */
import { _IO, defineStruct, u32, u64 } from '@liveupdate/core';
import { MAX_PAGE_ORDER, PAGE_SIZE } from '@liveupdate/kernel';

/** `ringbuf_create` flag: the new fd gets `FD_CLOEXEC`. Not a property of the buffer. */
export const RINGBUF_CLOEXEC = 0x1;
/**
 * `ringbuf_create` flag: when a record does not fit, drop the oldest records to make room (and
 * count them in `dropped`) instead of failing the write with `EAGAIN` — a flight recorder, like
 * ramoops or a perf buffer in overwrite mode.
 */
export const RINGBUF_OVERWRITE = 0x2;
/** Every flag `ringbuf_create` knows; any other bit is `EINVAL`. */
export const RINGBUF_ALL_FLAGS = RINGBUF_CLOEXEC | RINGBUF_OVERWRITE;

/** Smallest buffer: one page. */
export const RINGBUF_MIN_SIZE = PAGE_SIZE;
/** Largest buffer `ringbuf_create` accepts (`E2BIG` above, as BPF's ring buffer map). */
export const RINGBUF_MAX_SIZE = 16 * 1024 * 1024;
/** Largest physically contiguous piece of a buffer: one folio of `MAX_PAGE_ORDER` (4 MiB). */
export const RINGBUF_MAX_FOLIO_SIZE = PAGE_SIZE * 2 ** MAX_PAGE_ORDER;

/** Records start at multiples of 8 bytes, so a record header never wraps around the end. */
export const RINGBUF_RECORD_ALIGN = 8;

/**
 * `struct ringbuf_record_header` (8 bytes), in front of every record in the buffer:
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 4 | `len`: payload bytes (the record takes `8 + len` rounded up to 8) |
 * | 4 | 4 | `reserved`: 0 |
 */
export const ringbufRecordHeader = defineStruct('ringbuf_record_header', [
  ['len', u32],
  ['reserved', u32],
] as const);

/** The ioctl type byte of the ring buffer (`'r'`). */
export const RINGBUF_IOCTL_TYPE = 0x72;
/**
 * Read the buffer's counters into a {@link ringbufStatsArg}. Numbered like LUO's ioctls: `_IO`,
 * with the struct's size in its own leading `size` field, so the struct can grow.
 */
export const RINGBUF_IOC_STATS = _IO(RINGBUF_IOCTL_TYPE, 0x01);

/**
 * `struct ringbuf_stats` (64 bytes), the argument of {@link RINGBUF_IOC_STATS}:
 *
 * | offset | size | field |
 * |---|---|---|
 * | 0 | 4 | `size`: in, `sizeof(struct ringbuf_stats)` |
 * | 4 | 4 | `flags`: the buffer's flags ({@link RINGBUF_OVERWRITE}) |
 * | 8 | 8 | `capacity`: bytes of the buffer |
 * | 16 | 8 | `used`: bytes the unread records take, headers and padding included |
 * | 24 | 8 | `records`: unread records |
 * | 32 | 8 | `dropped`: records overwritten before they were read |
 * | 40 | 8 | `head`: bytes ever appended (the producer position) |
 * | 48 | 8 | `tail`: bytes ever consumed or dropped (the consumer position) |
 * | 56 | 8 | `live_updates`: kernel live updates this buffer has been carried through |
 */
export const ringbufStatsArg = defineStruct('ringbuf_stats', [
  ['size', u32],
  ['flags', u32],
  ['capacity', u64],
  ['used', u64],
  ['records', u64],
  ['dropped', u64],
  ['head', u64],
  ['tail', u64],
  ['liveUpdates', u64],
] as const);
