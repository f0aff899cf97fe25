import {
  defineHandler,
  type FileHandler,
  restoreSerializedFolio,
  serializedDataAddress,
} from '@liveupdate/core';
import {
  KernelError,
  PAGE_SIZE,
  khoPreserveVmalloc,
  khoUnpreserveVmalloc,
  type Folio,
  type FrameRange,
  type KhoVmalloc,
} from '@liveupdate/kernel';
import { MFD_ALLOW_SEALING, hex } from '@liveupdate/machine';
import type { MemfdFileSystem } from './memfd-file-system.js';
import { pagesFor, type MemfdInode } from './memfd-inode.js';
import {
  MEMFD_LUO_ALL_SEALS,
  MEMFD_LUO_FH_COMPATIBLE,
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_UPTODATE,
  memfdLuoFolioSer,
  memfdLuoSer,
  packPfnFlags,
} from './memfd-luo-abi.js';
import {
  MAX_PRESERVED_PAGES,
  MEMFD_LUO_SER_ORDER,
  readPreservedMemfd,
  type PreservedMemfd,
} from './memfd-luo-reader.js';

/** What `preserve` leaves in `privateData` for `unpreserve`; this kernel only. */
interface MemfdPreservation {
  readonly inode: MemfdInode;
  readonly serPhys: number;
  readonly folios: readonly Folio[];
  readonly vmalloc: KhoVmalloc | null;
}

type MemfdLuoSer = ReturnType<typeof memfdLuoSer.decode>;

/**
 * The memfd file handler, `"memfd-v2"` (`mm/memfd_luo.c`): a memfd's pages cross a live update
 * in place — the same frames, no byte copied — with its size, position and seals.
 *
 * - `preserve` freezes the size (writes past the end, `ftruncate`, `fallocate` and hole punching
 *   fail with `EPERM`; writes inside the size still work and are carried over), fills every hole
 *   of `[0, size)` with zeroed folios, preserves each folio through KHO and lists them as
 *   `memfd_luo_folio_ser[]` in a KHO vmalloc area, described by a preserved `memfd_luo_ser` whose
 *   address is the file's `serializedData`. A memfd with unknown seals is `EOPNOTSUPP`.
 * - `freeze` records the file position again; `unpreserve` undoes `preserve` and thaws the size.
 * - `retrieve` builds a new memfd (`O_RDWR`, not frozen) on the restored frames.
 * - `finish` frees the frames of a memfd that was never retrieved.
 * - `preservedFrames` lists every frame the two above would take, restoring nothing, so that LUO
 *   can refuse frames claimed by two files before any is retrieved.
 *
 * `retrieve`, `finish` and `preservedFrames` read the handover with {@link readPreservedMemfd},
 * which refuses everything memfd-v2's writer cannot produce (`EINVAL` for `memfd_luo_ser` and its
 * array description, `EIO` for a folio entry) before anything is restored. A damaged file fails
 * alone, with a kernel log line saying what was wrong and where; the folios its list names stay
 * reserved (they cannot be trusted to be this file's) and are counted in that line.
 *
 * `memfd_luo_folio_ser` records no order (Linux reads it from the restored page). It follows from
 * the layout: holes are filled and no folio crosses the end, so the folios tile `[0, size)` and a
 * folio's order is log2 of the distance to the next one's index (or to the end), checked against
 * the alignment of its index and pfn and against the order KHO recorded.
 */
export function createMemfdLuoHandler(memfds: MemfdFileSystem): FileHandler {
  const ctx = memfds.context;
  const { kho, pages, memory, log } = ctx;

  const readSer = (phys: number): MemfdLuoSer =>
    memfdLuoSer.decode(memory.read(phys, memfdLuoSer.size));
  const writeSer = (phys: number, ser: MemfdLuoSer): void =>
    memfdLuoSer.encodeInto(memory.view(phys, memfdLuoSer.size), 0, ser);

  const serAddress = (data: bigint): number => serializedDataAddress(data, memory, 'memfd');
  const restoreSer = (phys: number): Folio =>
    restoreSerializedFolio(kho, phys, MEMFD_LUO_SER_ORDER, 'memfd_luo_ser');

  /** Restore every folio `memfd` lists and free it: the file's data is dropped. */
  const discard = (memfd: PreservedMemfd): void => {
    for (const { pfn, order } of [...memfd.arrayFolios, ...memfd.folios]) {
      pages.freePages(kho.restoreFolio(pfn * PAGE_SIZE, order));
    }
  };

  /**
   * {@link readPreservedMemfd}, with a log line for what it refused: which `memfd_luo_ser`, in
   * which session, what is wrong, and that the folios it lists stay reserved.
   */
  const read = (serPhys: number, session: string, op: string): PreservedMemfd => {
    try {
      return readPreservedMemfd(ctx, serPhys);
    } catch (error) {
      const listed = memfdLuoSer.decode(memory.read(serPhys, memfdLuoSer.size)).nrFolios;
      log.err(
        `${(error as Error).message} (${op} in session "${session}"); the folios it lists (nr_folios ${listed}) stay reserved`,
      );
      throw error;
    }
  };

  return defineHandler({
    compatible: MEMFD_LUO_FH_COMPATIBLE,

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
        const serPhys = kho.allocPreserve(memfdLuoSer.size);
        undo.push(() => kho.unpreserveFree(serPhys));
        // memfd_pin_folios(): every page of [0, size) present, no folio crossing the end.
        const last = endPage > 0 ? inode.lookup(endPage - 1) : undefined;
        if (last && last.index + 2 ** last.folio.order > endPage) {
          if (!inode.splitFolio(last.index, endPage)) {
            throw new KernelError('ENOMEM', 'memfd: no memory to split the last folio');
          }
        }
        inode.allocateRange(0, endPage, endPage);
        const folios = inode.folios(endPage);
        const array = new Uint8Array(folios.length * memfdLuoFolioSer.size);
        folios.forEach(({ index, folio }, i) => {
          pages.pin(folio);
          undo.push(() => pages.unpin(folio));
          kho.preserveFolio(folio);
          undo.push(() => kho.unpreserveFolio(folio));
          memfdLuoFolioSer.encodeInto(array, i * memfdLuoFolioSer.size, {
            pfnFlags: packPfnFlags(folio.pfn, MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE),
            index: BigInt(index),
          });
        });
        const vmalloc = folios.length > 0 ? khoPreserveVmalloc(ctx, array) : null;
        if (vmalloc) undo.push(() => khoUnpreserveVmalloc(ctx, vmalloc));
        writeSer(serPhys, {
          pos: BigInt(file.pos),
          size: BigInt(inode.size),
          seals: inode.seals,
          flags: 0,
          nrFolios: BigInt(folios.length),
          folios: {
            first: BigInt(vmalloc?.first ?? 0),
            totalPages: vmalloc?.totalPages ?? 0,
            flags: vmalloc?.flags ?? 0,
            order: vmalloc?.order ?? 0,
          },
        });
        const preservation: MemfdPreservation = {
          inode,
          serPhys,
          folios: folios.map((f) => f.folio),
          vmalloc,
        };
        args.serializedData = BigInt(serPhys);
        args.privateData = preservation;
        log.debug(
          `memfd: preserved inode ${inode.id}: ${inode.size} bytes in ${folios.length} folios at ${hex(serPhys)}`,
        );
      } catch (error) {
        for (const step of undo.reverse()) step();
        throw error;
      }
    },

    /** `unpreserve`: unpreserve everything `preserve` did and thaw the size. */
    unpreserve(args) {
      const preservation = args.privateData as MemfdPreservation | undefined;
      if (!preservation) throw new KernelError('EINVAL', 'memfd: unpreserve without preserve');
      const { inode, serPhys, folios, vmalloc } = preservation;
      if (vmalloc) khoUnpreserveVmalloc(ctx, vmalloc);
      for (const folio of folios) {
        kho.unpreserveFolio(folio);
        pages.unpin(folio);
      }
      kho.unpreserveFree(serPhys);
      inode.frozen = false;
      args.privateData = undefined;
    },

    /** `freeze`: record the file position as it is at reboot. */
    freeze(args) {
      const serPhys = serAddress(args.serializedData);
      if (args.file) writeSer(serPhys, { ...readSer(serPhys), pos: BigInt(args.file.pos) });
    },

    /**
     * `retrieve`: a new memfd on the preserved frames, with size, position and seals. `EINVAL`
     * for missing serialized data or a damaged `memfd_luo_ser`, `EIO` for a damaged folio entry
     * (see {@link readPreservedMemfd}): nothing is restored then but the `memfd_luo_ser` page,
     * which is freed. `EOPNOTSUPP` for seals or flags this kernel does not know, after freeing
     * the (valid) folios.
     */
    retrieve(args) {
      const serPhys = serAddress(args.serializedData);
      const serFolio = restoreSer(serPhys);
      try {
        const memfd = read(serPhys, args.session.name, 'retrieve');
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
        for (const { index, pfn, order } of memfd.folios) {
          inode.adopt(index, kho.restoreFolio(pfn * PAGE_SIZE, order));
        }
        const file = memfds.open(inode);
        file.pos = memfd.pos;
        args.file = file;
        log.debug(
          `memfd: retrieved ${memfd.size} bytes in ${memfd.folios.length} folios as inode ${inode.id}`,
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
        discard(read(serPhys, args.session.name, 'finish'));
      } finally {
        pages.freePages(serFolio);
      }
    },

    /**
     * `preservedFrames`: the `memfd_luo_ser` page, the folio array with its chunks, and every
     * folio, read as `retrieve` reads them and with the same errors; nothing is restored.
     */
    preservedFrames(args): FrameRange[] {
      const serPhys = serAddress(args.serializedData);
      if (kho.incomingOrder(serPhys) !== MEMFD_LUO_SER_ORDER) {
        throw new KernelError('EINVAL', `memfd: ${hex(serPhys)} is not a preserved memfd_luo_ser`);
      }
      const memfd = read(serPhys, args.session.name, 'preservedFrames');
      return [
        { pfn: serPhys / PAGE_SIZE, order: MEMFD_LUO_SER_ORDER },
        ...memfd.arrayFolios,
        ...memfd.folios,
      ].map(({ pfn, order }) => ({ pfn, frames: 2 ** order }));
    },

    /** `get_id`: the inode, so every file of one memfd counts as the same file. */
    getId(file) {
      return memfds.inodeOf(file) ?? file;
    },
  });
}
