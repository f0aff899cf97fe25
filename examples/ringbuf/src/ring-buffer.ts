import {
  KernelError,
  PAGE_SIZE,
  getOrder,
  type Folio,
  type PageAllocator,
  type PhysicalSegment,
} from '@liveupdate/kernel';
import type { PhysicalMemory } from '@liveupdate/machine';
import {
  RINGBUF_MAX_FOLIO_SIZE,
  RINGBUF_OVERWRITE,
  RINGBUF_RECORD_ALIGN,
  ringbufRecordHeader,
} from './ringbuf-uapi.js';

/** The counters of a buffer: what the `RINGBUF_IOC_STATS` ioctl reports and `ringbuf-v1` carries. */
export interface RingBufferCounters {
  /** Producer position: bytes ever appended. */
  head: number;
  /** Consumer position: bytes ever consumed or dropped. */
  tail: number;
  /** Unread records between `tail` and `head`. */
  records: number;
  /** Records overwritten before they were read. */
  dropped: number;
  /** Live updates the buffer has been carried through. */
  liveUpdates: number;
}

/** Bytes a record with `len` bytes of payload takes in the buffer: header, payload, padding. */
export function recordBytes(len: number): number {
  const raw = ringbufRecordHeader.size + len;
  return Math.ceil(raw / RINGBUF_RECORD_ALIGN) * RINGBUF_RECORD_ALIGN;
}

/**
 * An append-only log of records in a ring of physical memory: the producer appends whole records
 * at `head`, the consumer takes them from `tail`, oldest first. The bytes live in the buffer's
 * folios only (one folio up to 4 MiB, several above), so preserving those folios preserves every
 * unread record as it lies; the counters are plain numbers, written out for the next kernel by
 * the handler.
 */
export class RingBuffer implements RingBufferCounters {
  /** Bytes of the buffer: a power of two. */
  readonly size: number;
  /** Buffer flags ({@link RINGBUF_OVERWRITE}). */
  readonly flags: number;
  /** The folios holding the bytes, in order, each {@link folioBytes} long. */
  readonly folios: readonly Folio[];
  head = 0;
  tail = 0;
  records = 0;
  dropped = 0;
  liveUpdates = 0;
  readonly #memory: PhysicalMemory;
  readonly #pages: PageAllocator;
  #released = false;

  /** A buffer on `folios`, which it owns from now on (see {@link allocate} for a new one). */
  constructor(
    memory: PhysicalMemory,
    pages: PageAllocator,
    size: number,
    flags: number,
    folios: readonly Folio[],
  ) {
    this.#memory = memory;
    this.#pages = pages;
    this.size = size;
    this.flags = flags;
    this.folios = folios;
  }

  /** A new, empty, zeroed buffer of `size` bytes. `ENOMEM` when the folios cannot be found. */
  static allocate(
    memory: PhysicalMemory,
    pages: PageAllocator,
    size: number,
    flags: number,
  ): RingBuffer {
    const folioBytes = Math.min(size, RINGBUF_MAX_FOLIO_SIZE);
    const folios: Folio[] = [];
    try {
      for (let at = 0; at < size; at += folioBytes) {
        folios.push(pages.allocPages(getOrder(folioBytes), { zero: true }));
      }
    } catch (error) {
      for (const folio of folios) pages.freePages(folio);
      throw error;
    }
    return new RingBuffer(memory, pages, size, flags, folios);
  }

  /** Bytes of each folio. */
  get folioBytes(): number {
    return this.size / this.folios.length;
  }

  /** Bytes the unread records take. */
  get used(): number {
    return this.head - this.tail;
  }

  /**
   * Append one record. `E2BIG` when it could never fit; when there is no room now, `EAGAIN`, or
   * with {@link RINGBUF_OVERWRITE} the oldest records are dropped until there is.
   */
  append(payload: Uint8Array): void {
    const bytes = recordBytes(payload.length);
    if (bytes > this.size) {
      throw new KernelError(
        'E2BIG',
        `ringbuf: a ${payload.length}-byte record does not fit a ${this.size}-byte buffer`,
      );
    }
    while (this.size - this.used < bytes) {
      if (!(this.flags & RINGBUF_OVERWRITE)) {
        throw new KernelError('EAGAIN', `ringbuf: buffer full (${this.records} unread records)`);
      }
      this.tail += recordBytes(this.#recordLength(this.tail));
      this.records--;
      this.dropped++;
    }
    this.#copyIn(this.head, ringbufRecordHeader.encode({ len: payload.length, reserved: 0 }));
    this.#copyIn(this.head + ringbufRecordHeader.size, payload);
    this.head += bytes;
    this.records++;
  }

  /**
   * Take the oldest record. `EAGAIN` when there is none; `EINVAL` when it is longer than `max`
   * (it stays unread, as with `/dev/kmsg`).
   */
  consume(max: number): Uint8Array {
    if (this.records === 0) throw new KernelError('EAGAIN', 'ringbuf: no unread records');
    const len = this.#recordLength(this.tail);
    if (len > max) {
      throw new KernelError('EINVAL', `ringbuf: the next record is ${len} bytes, more than ${max}`);
    }
    const payload = this.#copyOut(this.tail + ringbufRecordHeader.size, len);
    this.tail += recordBytes(len);
    this.records--;
    return payload;
  }

  /** The frames behind `[offset, offset + length)` of the buffer, for `mmap`. */
  segments(offset: number, length: number): PhysicalSegment[] {
    if (offset + length > this.size) {
      throw new KernelError(
        'EINVAL',
        `ringbuf: cannot map ${length} bytes at ${offset} of a ${this.size}-byte buffer`,
      );
    }
    const out: PhysicalSegment[] = [];
    for (let at = offset; at < offset + length;) {
      const piece = this.#piece(at, offset + length - at);
      out.push({ phys: piece.phys, length: piece.length });
      at += piece.length;
    }
    return out;
  }

  /** Give the folios back to the page allocator (the last `fput`). */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    for (const folio of this.folios) this.#pages.freePages(folio);
  }

  /**
   * The payload length of the record at position `at`, checked against what is unread: a header
   * that claims more (damaged through a mapping, or by a bad handover) is `EIO`, never followed.
   */
  #recordLength(at: number): number {
    const { len } = ringbufRecordHeader.decode(this.#copyOut(at, ringbufRecordHeader.size));
    if (recordBytes(len) > this.head - at) {
      throw new KernelError('EIO', `ringbuf: damaged record header at position ${at}`);
    }
    return len;
  }

  /** The physically contiguous piece of at most `length` bytes at position `at`. */
  #piece(at: number, length: number): { phys: number; length: number } {
    const offset = at % this.size;
    const folio = this.folios[Math.floor(offset / this.folioBytes)]!;
    const within = offset % this.folioBytes;
    return {
      phys: folio.pfn * PAGE_SIZE + within,
      length: Math.min(length, this.folioBytes - within),
    };
  }

  #copyIn(at: number, data: Uint8Array): void {
    for (let done = 0; done < data.length;) {
      const piece = this.#piece(at + done, data.length - done);
      this.#memory.write(piece.phys, data.subarray(done, done + piece.length));
      done += piece.length;
    }
  }

  #copyOut(at: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const piece = this.#piece(at + done, length - done);
      out.set(this.#memory.view(piece.phys, piece.length), done);
      done += piece.length;
    }
    return out;
  }
}
