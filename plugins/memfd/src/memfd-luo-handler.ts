import {
  defineHandler,
  type FileHandler,
  restoreSerializedFolio,
  serializedDataAddress,
} from '@liveupdate/core';
import { KernelError, PAGE_SIZE, type Folio, type FrameRange } from '@liveupdate/kernel';
import { MFD_ALLOW_SEALING, hex } from '@liveupdate/machine';
import type { MemfdFileSystem } from './memfd-file-system.js';
import { pagesFor, type MemfdFolio, type MemfdInode } from './memfd-inode.js';
import { MEMFD_LUO_ALL_SEALS } from './memfd-luo-abi.js';
import {
  MAX_PRESERVED_PAGES,
  MEMFD_LUO_SER_ORDER,
  unwriteMemfd,
  type MemfdFormat,
  type PreservedMemfd,
  type WrittenMemfd,
} from './memfd-format.js';
import { memfdFormat } from './memfd-formats.js';

/** What `preserve` leaves in `privateData` for `freeze` and `unpreserve`; this kernel only. */
interface MemfdPreservation {
  readonly inode: MemfdInode;
  readonly folios: readonly MemfdFolio[];
  /** The layout last written; `freeze` replaces it when LUO asks for another. */
  written: WrittenMemfd;
}

/** The layouts a memfd handler reads and writes, newest first; the first is its `compatible`. */
export interface MemfdHandlerFormats {
  readonly reads: readonly string[];
  readonly writes: readonly string[];
}

/**
 * The memfd file handler (`mm/memfd_luo.c`): a memfd's pages cross a live update in place — the
 * same frames, no byte copied — with its size, position and seals. It writes the layout LUO asks
 * for (`args.compatible`, one of `formats.writes`: `"memfd-v3"` lists runs of contiguous folios,
 * `"memfd-v2"` every folio) and reads any of `formats.reads`.
 *
 * - `preserve` freezes the size (writes past the end, `ftruncate`, `fallocate` and hole punching
 *   fail with `EPERM`; writes inside the size still work and are carried over), fills every hole
 *   of `[0, size)` with zeroed folios, preserves each folio through KHO and lists them in a KHO
 *   vmalloc area, described by a preserved `memfd_luo_ser` whose address is the file's
 *   `serializedData`. A memfd with unknown seals is `EOPNOTSUPP`.
 * - `freeze` records the file position again; when LUO asks for another layout than `preserve`
 *   wrote (a kernel that reads another was loaded since), it writes the new `memfd_luo_ser` and
 *   list first, then frees the old ones: the folios stay as they are.
 * - `unpreserve` undoes `preserve` (and whatever `freeze` rewrote) and thaws the size.
 * - `retrieve` builds a new memfd (`O_RDWR`, not frozen) on the restored frames.
 * - `finish` frees the frames of a memfd that was never retrieved.
 * - `preservedFrames` lists every frame the two above would take, restoring nothing, so that LUO
 *   can refuse frames claimed by two files before any is retrieved.
 *
 * `retrieve`, `finish` and `preservedFrames` read the handover with the reader of the layout it
 * was written in (see `readPreservedMemfd`), which refuses everything that layout's writer cannot
 * produce (`EINVAL` for `memfd_luo_ser` and its array description, `EIO` for an entry) before
 * anything is restored. A damaged file fails alone, with a kernel log line saying what was wrong
 * and where; the folios its list names stay reserved (they cannot be trusted to be this file's)
 * and are counted in that line.
 */
export function createMemfdLuoHandler(
  memfds: MemfdFileSystem,
  formats: MemfdHandlerFormats,
): FileHandler {
  const ctx = memfds.context;
  const { kho, pages, memory, log } = ctx;
  const compatible = formats.writes[0]!;

  /** The layout named `layout`, if this handler's `formats[list]` has it; `EINVAL` otherwise. */
  const layoutOf = (list: 'reads' | 'writes', layout: string): MemfdFormat => {
    if (!formats[list].includes(layout)) {
      throw new KernelError('EINVAL', `memfd: handler ${compatible} ${list} no "${layout}"`);
    }
    return memfdFormat(layout);
  };

  const serAddress = (data: bigint): number => serializedDataAddress(data, memory, 'memfd');
  const restoreSer = (phys: number): Folio =>
    restoreSerializedFolio(kho, phys, MEMFD_LUO_SER_ORDER, 'memfd_luo_ser');

  /** Each folio of `memfd`'s runs with its first page in the file. */
  const foliosOf = (memfd: PreservedMemfd): { index: number; pfn: number; order: number }[] =>
    memfd.runs.flatMap(({ index, pfn, nrFolios, order }) =>
      Array.from({ length: nrFolios }, (_, k) => ({
        index: index + k * 2 ** order,
        pfn: pfn + k * 2 ** order,
        order,
      })),
    );

  /** Restore every folio `memfd` lists and free it: the file's data is dropped. */
  const discard = (memfd: PreservedMemfd): void => {
    for (const { pfn, order } of [...memfd.arrayFolios, ...foliosOf(memfd)]) {
      pages.freePages(kho.restoreFolio(pfn * PAGE_SIZE, order));
    }
  };

  /**
   * The reader of `layout`, with a log line for what it refused: which `memfd_luo_ser`, in which
   * session, what is wrong, and that the folios it lists stay reserved.
   */
  const read = (layout: string, serPhys: number, session: string, op: string): PreservedMemfd => {
    const format = layoutOf('reads', layout);
    try {
      return format.read(ctx, serPhys);
    } catch (error) {
      // Reading the count again must not replace the error being reported with its own.
      let listed: string;
      try {
        listed = format.listed(memory, serPhys);
      } catch (again) {
        listed = `unreadable: ${(again as Error).message}`;
      }
      log.err(
        `${(error as Error).message} (${op} in session "${session}"); the folios it lists (${listed}) stay reserved`,
      );
      throw error;
    }
  };

  return defineHandler({
    compatible,
    reads: formats.reads,
    writes: formats.writes,

    /** `can_preserve`: a memfd of this kernel, except `MFD_HUGETLB` ones (hugetlbfs in Linux). */
    canPreserve(_handler, file) {
      const inode = memfds.inodeOf(file);
      return inode !== undefined && !inode.hugetlb;
    },

    /** `preserve`: see the handler's description. All or nothing. */
    preserve(args) {
      const file = args.file;
      const inode = file ? memfds.inodeOf(file) : undefined;
      if (!file || !inode) throw new KernelError('EINVAL', 'memfd: not a memfd');
      if (inode.seals & ~MEMFD_LUO_ALL_SEALS) {
        throw new KernelError('EOPNOTSUPP', `memfd: seals ${hex(inode.seals)} cannot be preserved`);
      }
      if (inode.frozen) throw new KernelError('EBUSY', `memfd: inode ${inode.id} is preserved`);
      const endPage = pagesFor(inode.size);
      if (endPage > MAX_PRESERVED_PAGES) {
        throw new KernelError('EFBIG', `memfd: ${inode.size} bytes is too large to preserve`);
      }
      inode.frozen = true;
      const undo: (() => void)[] = [
        () => {
          inode.frozen = false;
        },
      ];
      try {
        // memfd_pin_folios(): every page of [0, size) present, no folio crossing the end.
        const last = endPage > 0 ? inode.lookup(endPage - 1) : undefined;
        if (last && last.index + 2 ** last.folio.order > endPage) {
          if (!inode.splitFolio(last.index, endPage)) {
            throw new KernelError('ENOMEM', 'memfd: no memory to split the last folio');
          }
        }
        inode.allocateRange(0, endPage, endPage);
        const folios = inode.folios(endPage);
        for (const { folio } of folios) {
          pages.pin(folio);
          undo.push(() => pages.unpin(folio));
          kho.preserveFolio(folio);
          undo.push(() => kho.unpreserveFolio(folio));
        }
        const written = layoutOf('writes', args.compatible).write(ctx, {
          pos: file.pos,
          size: inode.size,
          seals: inode.seals,
          folios,
        });
        const preservation: MemfdPreservation = { inode, folios, written };
        args.serializedData = BigInt(written.serPhys);
        args.privateData = preservation;
        log.debug(
          `memfd: preserved inode ${inode.id}: ${inode.size} bytes in ${folios.length} folios at ${hex(written.serPhys)} as ${written.compatible}`,
        );
      } catch (error) {
        for (const step of undo.reverse()) step();
        throw error;
      }
    },

    /** `unpreserve`: unpreserve everything `preserve` (and `freeze`) did and thaw the size. */
    unpreserve(args) {
      const preservation = args.privateData as MemfdPreservation | undefined;
      if (!preservation) throw new KernelError('EINVAL', 'memfd: unpreserve without preserve');
      const { inode, folios, written } = preservation;
      unwriteMemfd(ctx, written);
      for (const { folio } of folios) {
        kho.unpreserveFolio(folio);
        pages.unpin(folio);
      }
      inode.frozen = false;
      args.privateData = undefined;
    },

    /**
     * `freeze`: record the file position as it is at reboot, in the layout LUO asks for. When it
     * is not the one written, write it whole (all or nothing) and free the old one.
     */
    freeze(args) {
      const preservation = args.privateData as MemfdPreservation | undefined;
      if (!preservation) throw new KernelError('EINVAL', 'memfd: freeze without preserve');
      const { inode, folios, written } = preservation;
      const pos = args.file?.pos ?? 0;
      if (written.compatible === args.compatible) {
        memfdFormat(written.compatible).setPos(memory, written.serPhys, pos);
        return;
      }
      const rewritten = layoutOf('writes', args.compatible).write(ctx, {
        pos,
        size: inode.size,
        seals: inode.seals,
        folios,
      });
      unwriteMemfd(ctx, written);
      preservation.written = rewritten;
      args.serializedData = BigInt(rewritten.serPhys);
      log.debug(
        `memfd: inode ${inode.id} rewritten from ${written.compatible} to ${rewritten.compatible} at ${hex(rewritten.serPhys)}`,
      );
    },

    /**
     * `retrieve`: a new memfd on the preserved frames, with size, position and seals. `EINVAL`
     * for missing serialized data or a damaged `memfd_luo_ser`, `EIO` for a damaged entry (see
     * `readPreservedMemfd`): nothing is restored then but the `memfd_luo_ser` page, which is
     * freed. `EOPNOTSUPP` for seals or flags this kernel does not know, after freeing the
     * (valid) folios.
     */
    retrieve(args) {
      const serPhys = serAddress(args.serializedData);
      const serFolio = restoreSer(serPhys);
      try {
        const memfd = read(args.compatible, serPhys, args.session.name, 'retrieve');
        if (memfd.seals & ~MEMFD_LUO_ALL_SEALS || memfd.flags !== 0) {
          discard(memfd);
          throw new KernelError(
            'EOPNOTSUPP',
            `memfd: unknown seals ${hex(memfd.seals)} or flags ${hex(memfd.flags)}`,
          );
        }
        for (const { pfn, order } of memfd.arrayFolios) {
          pages.freePages(kho.restoreFolio(pfn * PAGE_SIZE, order));
        }
        const inode = memfds.createInode('', MFD_ALLOW_SEALING);
        inode.size = memfd.size;
        inode.seals = memfd.seals;
        // Run by run: one restore and one adoption per run of contiguous folios, whatever its
        // length (the file's size does not show in the blackout).
        let nrFolios = 0;
        for (const run of memfd.runs) {
          kho.restoreFolioRun(run.pfn * PAGE_SIZE, run.nrFolios, run.order);
          inode.adoptRun(run);
          nrFolios += run.nrFolios;
        }
        const file = memfds.open(inode);
        file.pos = memfd.pos;
        args.file = file;
        log.debug(
          `memfd: retrieved ${memfd.size} bytes in ${nrFolios} folios (${memfd.runs.length} entries of ${args.compatible}) as inode ${inode.id}`,
        );
      } finally {
        pages.freePages(serFolio);
      }
    },

    /**
     * `finish`: for a memfd never retrieved, free its frames and its serialized data. A damaged
     * list is refused as `retrieve` refuses it: logged, its folios left reserved.
     */
    finish(args) {
      if (args.retrieveStatus !== 0) return;
      const serPhys = serAddress(args.serializedData);
      const serFolio = restoreSer(serPhys);
      try {
        discard(read(args.compatible, serPhys, args.session.name, 'finish'));
      } finally {
        pages.freePages(serFolio);
      }
    },

    /**
     * `preservedFrames`: the `memfd_luo_ser` page, the entry array with its chunks, and every
     * run of folios, read as `retrieve` reads them and with the same errors; nothing is restored.
     */
    preservedFrames(args): FrameRange[] {
      const serPhys = serAddress(args.serializedData);
      if (kho.incomingOrder(serPhys) !== MEMFD_LUO_SER_ORDER) {
        throw new KernelError('EINVAL', `memfd: ${hex(serPhys)} is not a preserved memfd_luo_ser`);
      }
      const memfd = read(args.compatible, serPhys, args.session.name, 'preservedFrames');
      return [
        { pfn: serPhys / PAGE_SIZE, frames: 2 ** MEMFD_LUO_SER_ORDER },
        ...memfd.arrayFolios.map(({ pfn, order }) => ({ pfn, frames: 2 ** order })),
        ...memfd.runs.map(({ pfn, nrFolios, order }) => ({ pfn, frames: nrFolios * 2 ** order })),
      ];
    },

    /** `get_id`: the inode, so every file of one memfd counts as the same file. */
    getId(file) {
      return memfds.inodeOf(file) ?? file;
    },
  });
}
