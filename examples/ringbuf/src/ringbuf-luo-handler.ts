import {
  defineHandler,
  type FileHandler,
  type FileOpArgs,
  restoreSerializedFolio,
  serializedDataAddress,
} from '@liveupdate/core';
import {
  KernelError,
  PAGE_SIZE,
  getOrder,
  type Folio,
  type ModuleContext,
} from '@liveupdate/kernel';
import { hex } from '@liveupdate/machine';
import { RingBuffer, type RingBufferCounters } from './ring-buffer.js';
import { openRingBuffer, ringBufferOf } from './ringbuf-file-operations.js';
import { RINGBUF_LUO_FH_COMPATIBLE, RINGBUF_LUO_FLAGS, ringbufLuoSer } from './ringbuf-luo-abi.js';
import {
  RINGBUF_MAX_FOLIO_SIZE,
  RINGBUF_MIN_SIZE,
  RINGBUF_RECORD_ALIGN,
  ringbufRecordHeader,
} from './ringbuf-uapi.js';

/** What `preserve` leaves in `privateData` for `freeze` and `unpreserve`; this kernel only. */
interface RingbufPreservation {
  readonly ring: RingBuffer;
  readonly serPhys: number;
}

type RingbufLuoSer = ReturnType<typeof ringbufLuoSer.decode>;

/** A preserved buffer as `ringbuf_luo_ser` describes it, checked. */
interface PreservedRing {
  readonly size: number;
  readonly dataPhys: number;
  readonly order: number;
  readonly counters: RingBufferCounters;
}

const SER_ORDER = getOrder(ringbufLuoSer.size);

/**
 * The ring buffer's file handler, `"ringbuf-v1"`: a buffer's unread records cross a live update
 * in place — its folio is preserved as it is, no byte copied — with its counters and flags.
 *
 * - `preserve` preserves the buffer's folio and a `ringbuf_luo_ser` page describing it; the
 *   workload keeps appending and consuming. A buffer of more than one folio (above 4 MiB) is
 *   `EFBIG`: `ringbuf-v1` describes one.
 * - `freeze` writes the positions and counters as they are at reboot into `ringbuf_luo_ser`;
 *   `unpreserve` unpreserves both.
 * - `retrieve` builds a new buffer on the restored folio: `EINVAL` for missing or malformed data,
 *   `EOPNOTSUPP` for flags this kernel does not know, `EIO` when the folio cannot be restored.
 * - `finish` frees the folio of a buffer that was never retrieved.
 */
export function createRingbufLuoHandler(ctx: ModuleContext): FileHandler {
  const { kho, pages, memory, vfs, log } = ctx;

  const readSer = (phys: number): RingbufLuoSer =>
    ringbufLuoSer.decode(memory.view(phys, ringbufLuoSer.size));

  const writeSer = (phys: number, ring: RingBuffer): void =>
    ringbufLuoSer.encodeInto(memory.view(phys, ringbufLuoSer.size), 0, {
      size: BigInt(ring.size),
      data: BigInt(ring.folios[0]!.pfn * PAGE_SIZE),
      head: BigInt(ring.head),
      tail: BigInt(ring.tail),
      records: BigInt(ring.records),
      dropped: BigInt(ring.dropped),
      liveUpdates: BigInt(ring.liveUpdates),
      flags: ring.flags,
      reserved: 0,
    });

  const preservationOf = (args: FileOpArgs): RingbufPreservation => {
    const preservation = args.privateData as RingbufPreservation | undefined;
    if (!preservation) throw new KernelError('EINVAL', 'ringbuf: not preserved by this kernel');
    return preservation;
  };

  const serAddress = (data: bigint): number => serializedDataAddress(data, memory, 'ringbuf');
  const restoreSer = (phys: number): Folio =>
    restoreSerializedFolio(kho, phys, SER_ORDER, 'ringbuf_luo_ser');

  /**
   * Check everything a `ringbuf-v1` writer guarantees: `EINVAL` otherwise, and then nothing is
   * restored — memory a damaged header points at may be someone else's.
   */
  const preservedRing = (ser: RingbufLuoSer): PreservedRing => {
    const bad = (why: string): never => {
      throw new KernelError('EINVAL', `ringbuf: damaged ringbuf_luo_ser: ${why}`);
    };
    const size = Number(ser.size);
    if (
      size < RINGBUF_MIN_SIZE ||
      size > RINGBUF_MAX_FOLIO_SIZE ||
      !Number.isInteger(Math.log2(size))
    )
      bad(`size ${ser.size}`);
    if (ser.data % ser.size !== 0n || ser.data + ser.size > BigInt(memory.size))
      bad(`data ${hex(ser.data)} is not a ${size}-byte folio of RAM`);
    const max = BigInt(Number.MAX_SAFE_INTEGER);
    if ([ser.head, ser.records, ser.dropped, ser.liveUpdates].some((n) => n > max))
      bad('a counter is out of range');
    const used = ser.head - ser.tail;
    if (ser.tail > ser.head || used > ser.size) bad(`head ${ser.head}, tail ${ser.tail}`);
    if (
      ser.tail % BigInt(RINGBUF_RECORD_ALIGN) !== 0n ||
      used % BigInt(RINGBUF_RECORD_ALIGN) !== 0n
    )
      bad(`positions not aligned to ${RINGBUF_RECORD_ALIGN}`);
    if (
      (ser.records === 0n) !== (used === 0n) ||
      ser.records * BigInt(ringbufRecordHeader.size) > used
    )
      bad(`${ser.records} records in ${used} bytes`);
    return {
      size,
      dataPhys: Number(ser.data),
      order: getOrder(size),
      counters: {
        head: Number(ser.head),
        tail: Number(ser.tail),
        records: Number(ser.records),
        dropped: Number(ser.dropped),
        liveUpdates: Number(ser.liveUpdates),
      },
    };
  };

  /** Restore a preserved buffer's folio only to free it. */
  const discard = ({ dataPhys, order }: PreservedRing): void => {
    try {
      pages.freePages(kho.restoreFolio(dataPhys, order));
    } catch (error) {
      log.warn(`ringbuf: ${hex(dataPhys)} could not be restored to be freed: ${String(error)}`);
    }
  };

  return defineHandler({
    compatible: RINGBUF_LUO_FH_COMPATIBLE,

    /** `can_preserve`: a ring buffer of this kernel. */
    canPreserve: (_handler, file) => ringBufferOf(file) !== undefined,

    /** `preserve`: preserve the folio in place and describe it in a preserved page. */
    preserve(args) {
      const ring = args.file ? ringBufferOf(args.file) : undefined;
      if (!ring) throw new KernelError('EINVAL', 'ringbuf: not a ring buffer');
      if (ring.folios.length !== 1) {
        throw new KernelError(
          'EFBIG',
          `ringbuf: ${RINGBUF_LUO_FH_COMPATIBLE} preserves buffers of one folio (${RINGBUF_MAX_FOLIO_SIZE} bytes), not ${ring.size}`,
        );
      }
      const serPhys = kho.allocPreserve(ringbufLuoSer.size);
      try {
        kho.preserveFolio(ring.folios[0]!);
      } catch (error) {
        kho.unpreserveFree(serPhys);
        throw error;
      }
      writeSer(serPhys, ring);
      const preservation: RingbufPreservation = { ring, serPhys };
      args.serializedData = BigInt(serPhys);
      args.privateData = preservation;
    },

    /** `unpreserve`: undo `preserve`; the buffer itself never stopped working. */
    unpreserve(args) {
      const { ring, serPhys } = preservationOf(args);
      kho.unpreserveFolio(ring.folios[0]!);
      kho.unpreserveFree(serPhys);
      args.privateData = undefined;
    },

    /** `freeze`: record the positions and counters as they are at reboot. O(1). */
    freeze(args) {
      const { ring, serPhys } = preservationOf(args);
      writeSer(serPhys, ring);
    },

    /** `retrieve`: a new ring buffer on the preserved folio, its unread records in place. */
    retrieve(args) {
      const serPhys = serAddress(args.serializedData);
      const serFolio = restoreSer(serPhys);
      try {
        const ser = readSer(serPhys);
        const preserved = preservedRing(ser);
        if (ser.flags & ~RINGBUF_LUO_FLAGS || ser.reserved !== 0) {
          discard(preserved);
          throw new KernelError(
            'EOPNOTSUPP',
            `ringbuf: unknown flags ${hex(ser.flags)} or reserved ${hex(ser.reserved)}`,
          );
        }
        let folio: Folio;
        try {
          folio = kho.restoreFolio(preserved.dataPhys, preserved.order);
        } catch (error) {
          throw new KernelError('EIO', `ringbuf: ${hex(preserved.dataPhys)} cannot be restored`, {
            cause: error,
          });
        }
        const ring = new RingBuffer(memory, pages, preserved.size, ser.flags, [folio]);
        Object.assign(ring, preserved.counters);
        ring.liveUpdates++;
        args.file = openRingBuffer(vfs, ring);
      } finally {
        pages.freePages(serFolio);
      }
    },

    /** `finish`: for a buffer never retrieved, free its folio and its `ringbuf_luo_ser`. */
    finish(args) {
      if (args.retrieveStatus !== 0) return;
      const serPhys = serAddress(args.serializedData);
      const serFolio = restoreSer(serPhys);
      try {
        discard(preservedRing(readSer(serPhys)));
      } finally {
        pages.freePages(serFolio);
      }
    },
  });
}
