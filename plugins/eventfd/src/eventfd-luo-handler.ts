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
  eventfdCreateFile,
  eventfdFromFile,
  type EventFd,
  type File,
  type FrameRange,
  type ModuleContext,
} from '@liveupdate/kernel';
import { EFD_CLOEXEC, EFD_NONBLOCK, EFD_SEMAPHORE, O_NONBLOCK, hex } from '@liveupdate/machine';
import { EVENTFD_LUO_FH_COMPATIBLE, EVENTFD_LUO_FLAGS, eventfdLuoSer } from './eventfd-luo-abi.js';

/** What `preserve` leaves in `privateData` for `freeze` and `unpreserve`; this kernel only. */
interface EventfdPreservation {
  readonly file: File;
  readonly eventfd: EventFd;
  readonly serPhys: number;
}

type EventfdLuoSer = ReturnType<typeof eventfdLuoSer.decode>;

/** `eventfd_luo_ser` takes one page. */
const SER_ORDER = 0;

/** Whether `file` is an eventfd (`eventfd_ctx_fileget` succeeds on it). */
function isEventfd(file: File): boolean {
  try {
    eventfdFromFile(file);
    return true;
  } catch {
    return false;
  }
}

/**
 * The eventfd file handler, `"eventfd-v1"`: an eventfd's counter, and whether it is in semaphore
 * and non-blocking mode, cross a live update. The counter is 8 bytes: it is copied, not kept in
 * place.
 *
 * - `preserve` writes an `eventfd_luo_ser` into a preserved page; the eventfd keeps working.
 * - `freeze` writes the counter again as it is at reboot, so what was written to (or read from)
 *   the eventfd after `PRESERVE_FD` crosses; `unpreserve` frees the page.
 * - `retrieve` makes a new eventfd with that counter and mode: `EINVAL` for missing data, flags
 *   no `eventfd-v1` writer sets, or a reserved field that is not 0, logged with what was wrong.
 *   `preservedFrames` checks the same before any retrieve, and names the page to LUO.
 * - `finish` frees the page of an eventfd that was never retrieved.
 */
export function createEventfdLuoHandler(ctx: ModuleContext): FileHandler {
  const { kho, pages, memory, vfs, log } = ctx;

  const writeSer = ({ file, eventfd, serPhys }: EventfdPreservation): void =>
    eventfdLuoSer.encodeInto(memory.view(serPhys, eventfdLuoSer.size), 0, {
      count: eventfd.count,
      flags: (eventfd.semaphore ? EFD_SEMAPHORE : 0) | (file.flags & O_NONBLOCK ? EFD_NONBLOCK : 0),
      reserved: 0,
    });

  const preservationOf = (args: FileOpArgs): EventfdPreservation => {
    const preservation = args.privateData as EventfdPreservation | undefined;
    if (!preservation) throw new KernelError('EINVAL', 'eventfd: not preserved by this kernel');
    return preservation;
  };

  /** Log why a preserved eventfd cannot be used, and fail the file with `EINVAL`. */
  const refuse = (args: FileOpArgs, why: string): never => {
    const message = `eventfd: session ${args.session.name}: ${why}`;
    log.err(message);
    throw new KernelError('EINVAL', message);
  };

  /** The address of the file's `eventfd_luo_ser` page; `EINVAL` (logged) for another value. */
  const serPageOf = (args: FileOpArgs): number => {
    try {
      return serializedDataAddress(args.serializedData, memory, 'luo_file_ser.data');
    } catch (error) {
      return refuse(args, (error as Error).message);
    }
  };

  /**
   * The `eventfd_luo_ser` at `serPhys`, read as a copy (it may not be restored yet), with what an
   * `eventfd-v1` writer guarantees checked; `count` has no wrong value.
   */
  const readSer = (args: FileOpArgs, serPhys: number): EventfdLuoSer => {
    const ser = eventfdLuoSer.decode(memory.read(serPhys, eventfdLuoSer.size));
    if ((ser.flags & ~EVENTFD_LUO_FLAGS) !== 0) {
      refuse(
        args,
        `eventfd_luo_ser at ${hex(serPhys)}: flags ${hex(ser.flags)} has bits no ${EVENTFD_LUO_FH_COMPATIBLE} writer sets (${hex(ser.flags & ~EVENTFD_LUO_FLAGS)})`,
      );
    }
    if (ser.reserved !== 0) {
      refuse(args, `eventfd_luo_ser at ${hex(serPhys)}: reserved is ${hex(ser.reserved)}, not 0`);
    }
    return ser;
  };

  /** Check that the previous kernel preserved a page at `serPhys`; `EINVAL` (logged) if not. */
  const checkPreserved = (args: FileOpArgs, serPhys: number): void => {
    if (kho.incomingOrder(serPhys) !== SER_ORDER) {
      refuse(args, `${hex(serPhys)} is not a preserved eventfd_luo_ser page`);
    }
  };

  return defineHandler({
    compatible: EVENTFD_LUO_FH_COMPATIBLE,

    /** `can_preserve`: an eventfd. */
    canPreserve: (_handler, file) => isEventfd(file),

    /** `preserve`: describe the eventfd in a preserved page. */
    preserve(args) {
      if (!args.file || !isEventfd(args.file)) {
        throw new KernelError('EINVAL', 'eventfd: not an eventfd');
      }
      const preservation: EventfdPreservation = {
        file: args.file,
        eventfd: eventfdFromFile(args.file),
        serPhys: kho.allocPreserve(eventfdLuoSer.size),
      };
      writeSer(preservation);
      args.serializedData = BigInt(preservation.serPhys);
      args.privateData = preservation;
    },

    /** `unpreserve`: free the page; the eventfd itself never stopped working. */
    unpreserve(args) {
      kho.unpreserveFree(preservationOf(args).serPhys);
      args.privateData = undefined;
    },

    /**
     * `freeze`: the counter as it is at reboot. Nothing to undo on an aborted reboot, so no
     * `unfreeze`: the eventfd was never touched, and the next `freeze` writes the page again.
     */
    freeze(args) {
      writeSer(preservationOf(args));
    },

    /** `retrieve`: a new eventfd with the preserved counter and mode. */
    async retrieve(args) {
      const serPhys = serPageOf(args);
      checkPreserved(args, serPhys);
      const folio = restoreSerializedFolio(kho, serPhys, SER_ORDER, 'eventfd_luo_ser page');
      try {
        const ser = readSer(args, serPhys);
        // EFD_CLOEXEC is an fd flag; RETRIEVE_FD makes every fd close-on-exec anyway.
        args.file = eventfdCreateFile(vfs, ser.count, ser.flags & ~EFD_CLOEXEC);
      } finally {
        pages.freePages(folio);
      }
    },

    /**
     * `preservedFrames`: the `eventfd_luo_ser` page, read and checked as `retrieve` reads it, so
     * that LUO fails both files of a handover that names one page twice; nothing is restored.
     */
    preservedFrames(args): FrameRange[] {
      const serPhys = serPageOf(args);
      checkPreserved(args, serPhys);
      readSer(args, serPhys);
      return [{ pfn: serPhys / PAGE_SIZE, frames: 1 }];
    },

    /** `finish`: for an eventfd never retrieved, free its page. */
    finish(args) {
      if (args.retrieveStatus !== 0) return;
      const serPhys = serializedDataAddress(args.serializedData, memory, 'luo_file_ser.data');
      pages.freePages(restoreSerializedFolio(kho, serPhys, SER_ORDER, 'eventfd_luo_ser page'));
    },
  });
}
