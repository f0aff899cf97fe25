import { copyStructFromUser, copyStructToUser } from '@liveupdate/core';
import { KernelError, type File, type FileOperations, type Vfs } from '@liveupdate/kernel';
import { hex } from '@liveupdate/machine';
import { RingBuffer } from './ring-buffer.js';
import { RINGBUF_IOC_STATS, ringbufStatsArg } from './ringbuf-uapi.js';

/**
 * A ring buffer's `file_operations`. Each `write` appends one record and each `read` consumes
 * one, whole (no partial records, no seeking: `pread` is `ESPIPE`). `mmap` maps the buffer's
 * frames for zero-copy readers; the kernel re-checks every record header it reads from them.
 * The last reference frees the buffer.
 */
export const ringbufFileOperations: FileOperations = {
  read(file, count) {
    return ringOf(file).consume(count);
  },

  write(file, data) {
    if (data.length === 0) return 0;
    ringOf(file).append(data);
    return data.length;
  },

  ioctl(file, cmd, arg) {
    if (cmd !== RINGBUF_IOC_STATS) {
      throw new KernelError('ENOTTY', `ringbuf: unknown ioctl ${hex(cmd)}`);
    }
    const request = copyStructFromUser(ringbufStatsArg, arg);
    const ring = ringOf(file);
    copyStructToUser(ringbufStatsArg, arg!, {
      size: request.size,
      flags: ring.flags,
      capacity: BigInt(ring.size),
      used: BigInt(ring.used),
      records: BigInt(ring.records),
      dropped: BigInt(ring.dropped),
      head: BigInt(ring.head),
      tail: BigInt(ring.tail),
      liveUpdates: BigInt(ring.liveUpdates),
    });
    return 0;
  },

  mmap(file, offset, length) {
    return ringOf(file).segments(offset, length);
  },

  release(file) {
    ringOf(file).release();
  },
};

function ringOf(file: File): RingBuffer {
  return file.privateData as RingBuffer;
}

/** The buffer behind `file` when it is a ring buffer, else `undefined`. */
export function ringBufferOf(file: File): RingBuffer | undefined {
  return file.fops === ringbufFileOperations && file.privateData instanceof RingBuffer
    ? file.privateData
    : undefined;
}

/** A new file (`O_RDWR`, one reference) on `ring`, which the file owns from now on. */
export function openRingBuffer(vfs: Vfs, ring: RingBuffer): File {
  return vfs.anonInodeGetFile('ringbuf', ringbufFileOperations, ring);
}
