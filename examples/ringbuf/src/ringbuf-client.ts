import type { Process } from '@liveupdate/machine';
import { RINGBUF_IOC_STATS, ringbufStatsArg } from './ringbuf-uapi.js';

/** What {@link ringbufStats} returns: `struct ringbuf_stats` with numbers for counts. */
export interface RingbufStats {
  /** The buffer's flags (`RINGBUF_OVERWRITE`). */
  readonly flags: number;
  /** Bytes of the buffer. */
  readonly capacity: number;
  /** Bytes the unread records take, headers and padding included. */
  readonly used: number;
  /** Unread records. */
  readonly records: number;
  /** Records overwritten before they were read. */
  readonly dropped: number;
  /** Producer position: bytes ever appended. */
  readonly head: number;
  /** Consumer position: bytes ever consumed or dropped. */
  readonly tail: number;
  /** Kernel live updates this buffer has been carried through. */
  readonly liveUpdates: number;
}

/**
 * `ringbuf_create(size, flags)` from userspace: a new ring buffer of `size` bytes (a power of two,
 * 4 KiB to 16 MiB) with `RINGBUF_*` flags; resolves with its fd.
 */
export async function ringbufCreate(process: Process, size: number, flags = 0): Promise<number> {
  return (await process.syscall('ringbuf_create', size, flags)) as number;
}

/** `ioctl(fd, RINGBUF_IOC_STATS)`: the buffer's counters. */
export async function ringbufStats(process: Process, fd: number): Promise<RingbufStats> {
  const arg = new Uint8Array(ringbufStatsArg.size);
  new DataView(arg.buffer).setUint32(0, ringbufStatsArg.size, true);
  await process.ioctl(fd, RINGBUF_IOC_STATS, arg);
  const { flags, capacity, used, records, dropped, head, tail, liveUpdates } =
    ringbufStatsArg.decode(arg);
  return {
    flags,
    capacity: Number(capacity),
    used: Number(used),
    records: Number(records),
    dropped: Number(dropped),
    head: Number(head),
    tail: Number(tail),
    liveUpdates: Number(liveUpdates),
  };
}
