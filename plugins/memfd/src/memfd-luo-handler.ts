import {
  defineHandler,
  type FileHandler,
  restoreSerializedFolio,
  serializedDataAddress,
} from '@liveupdate/core';
import {
  KernelError,
  MAX_PAGE_ORDER,
  PAGE_SIZE,
  getOrder,
  khoPreserveVmalloc,
  khoRestoreVmalloc,
  khoUnpreserveVmalloc,
  type Folio,
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
  unpackPfnFlags,
} from './memfd-luo-abi.js';

/** What `preserve` leaves in `privateData` for `unpreserve`; this kernel only. */
interface MemfdPreservation {
  readonly inode: MemfdInode;
  readonly serPhys: number;
  readonly folios: readonly Folio[];
  readonly vmalloc: KhoVmalloc | null;
}

/** A folio of a preserved memfd, read back: its place in the file, its frames and its order. */
interface PreservedFolio {
  readonly index: number;
  readonly pfn: number;
  readonly order: number;
  readonly flags: number;
}

type MemfdLuoSer = ReturnType<typeof memfdLuoSer.decode>;

/** Preserved memfds are limited to `UINT_MAX` pages (`EFBIG`), as in Linux. */
const MAX_PRESERVED_PAGES = 0xffff_ffff;
const SER_ORDER = getOrder(memfdLuoSer.size);

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
    memfdLuoSer.decode(memory.view(phys, memfdLuoSer.size));
  const writeSer = (phys: number, ser: MemfdLuoSer): void =>
    memfdLuoSer.encodeInto(memory.view(phys, memfdLuoSer.size), 0, ser);

  const serAddress = (data: bigint): number => serializedDataAddress(data, memory, 'memfd');
  const restoreSer = (phys: number): Folio =>
    restoreSerializedFolio(kho, phys, SER_ORDER, 'memfd_luo_ser');

  /** `size` and `pos` as numbers; `EINVAL` when they cannot be a preserved memfd's. */
  const geometry = (ser: MemfdLuoSer): { size: number; pos: number } => {
    if (ser.size > BigInt(MAX_PRESERVED_PAGES) * BigInt(PAGE_SIZE)) {
      throw new KernelError('EINVAL', `memfd: preserved size ${ser.size} is too large`);
    }
    if (ser.pos > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new KernelError('EINVAL', `memfd: preserved position ${ser.pos} is too large`);
    }
    return { size: Number(ser.size), pos: Number(ser.pos) };
  };

  /**
   * `kho_restore_vmalloc(&ser->folios)` and a check of every entry: indexes increasing inside the
   * file, known flags, and an order its place implies. `EINVAL` for anything else; nothing of the
   * folios themselves is restored yet.
   */
  const restoreFolioList = (ser: MemfdLuoSer, size: number): PreservedFolio[] => {
    const endPage = pagesFor(size);
    const count = ser.nrFolios;
    if (count === 0n) return [];
    if (count > BigInt(endPage)) {
      throw new KernelError('EINVAL', `memfd: ${count} folios for ${endPage} pages`);
    }
    const { first, totalPages, flags, order } = ser.folios;
    if (first >= BigInt(memory.size)) {
      throw new KernelError('EINVAL', `memfd: folio array at ${hex(first)} is outside RAM`);
    }
    const array = khoRestoreVmalloc(ctx, { first: Number(first), totalPages, flags, order });
    const entries = Array.from({ length: Number(count) }, (_, i) => {
      if ((i + 1) * memfdLuoFolioSer.size > array.length) {
        throw new KernelError('EINVAL', `memfd: folio array holds fewer than ${count} entries`);
      }
      const entry = memfdLuoFolioSer.decode(array, i * memfdLuoFolioSer.size);
      if (entry.index >= BigInt(endPage)) {
        throw new KernelError('EINVAL', `memfd: folio ${i} at page ${entry.index} is past the end`);
      }
      return { ...unpackPfnFlags(entry.pfnFlags), index: Number(entry.index) };
    });
    const folios: PreservedFolio[] = [];
    entries.forEach(({ pfn, flags: folioFlags, index }, i) => {
      const end = entries[i + 1]?.index ?? endPage;
      const extent = end - index;
      const folioOrder = Math.log2(extent);
      const where = `memfd: folio ${i} (pfn ${hex(pfn)}, page ${index})`;
      if (extent <= 0) throw new KernelError('EINVAL', `${where}: indexes do not increase`);
      if (folioFlags & ~(MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE)) {
        throw new KernelError('EINVAL', `${where}: unknown flags ${hex(folioFlags)}`);
      }
      if (pfn === 0) return;
      if (
        !Number.isInteger(folioOrder) ||
        folioOrder > MAX_PAGE_ORDER ||
        index % extent !== 0 ||
        pfn % extent !== 0
      ) {
        throw new KernelError('EINVAL', `${where}: spans ${extent} pages, not an aligned folio`);
      }
      folios.push({ index, pfn, order: folioOrder, flags: folioFlags });
    });
    return folios;
  };

  /** Restore and free `folios`; one that cannot be restored is left reserved and reported. */
  const discard = (folios: readonly PreservedFolio[]): void => {
    let lost = 0;
    for (const { pfn, order } of folios) {
      try {
        pages.freePages(kho.restoreFolio(pfn * PAGE_SIZE, order));
      } catch {
        lost++;
      }
    }
    if (lost > 0) log.warn(`memfd: ${lost} preserved folios could not be restored to be freed`);
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
     * `retrieve`: a new memfd on the preserved frames, with size, position and seals. `EINVAL` for
     * missing or malformed data, `EOPNOTSUPP` for seals this kernel does not know, `EIO` when a
     * folio cannot be restored; on failure nothing is left behind but frames KHO would not give.
     */
    retrieve(args) {
      const serPhys = serAddress(args.serializedData);
      const serFolio = restoreSer(serPhys);
      try {
        const ser = readSer(serPhys);
        const { size, pos } = geometry(ser);
        if (ser.seals & ~MEMFD_LUO_ALL_SEALS || ser.flags !== 0) {
          try {
            discard(restoreFolioList(ser, size));
          } catch {
            // A malformed list stays reserved; the error below is the one that matters.
          }
          throw new KernelError(
            'EOPNOTSUPP',
            `memfd: unknown seals ${hex(ser.seals)} or flags ${hex(ser.flags)}`,
          );
        }
        const folios = restoreFolioList(ser, size);
        const inode = memfds.createInode('', MFD_ALLOW_SEALING);
        inode.size = size;
        inode.seals = ser.seals;
        folios.forEach(({ index, pfn, order, flags }, i) => {
          let folio: Folio;
          try {
            folio = kho.restoreFolio(pfn * PAGE_SIZE, order);
          } catch (error) {
            inode.evict();
            discard(folios.slice(i + 1));
            throw new KernelError('EIO', `memfd: folio at page ${index} cannot be restored`, {
              cause: error,
            });
          }
          if (!(flags & MEMFD_LUO_FOLIO_UPTODATE)) {
            memory.fill(pfn * PAGE_SIZE, PAGE_SIZE * 2 ** order, 0);
          }
          inode.adopt(index, folio);
        });
        const file = memfds.open(inode);
        file.pos = pos;
        args.file = file;
        log.debug(`memfd: retrieved ${size} bytes in ${folios.length} folios as inode ${inode.id}`);
      } finally {
        pages.freePages(serFolio);
      }
    },

    /** `finish`: for a memfd never retrieved, free its frames and its serialized data. */
    finish(args) {
      if (args.retrieveStatus !== 0) return;
      const serPhys = serAddress(args.serializedData);
      const serFolio = restoreSer(serPhys);
      try {
        const ser = readSer(serPhys);
        discard(restoreFolioList(ser, geometry(ser).size));
      } finally {
        pages.freePages(serFolio);
      }
    },

    /** `get_id`: the inode, so every file of one memfd counts as the same file. */
    getId(file) {
      return memfds.inodeOf(file) ?? file;
    },
  });
}
