import {
  defineHandler,
  restoreSerializedFolio,
  serializedDataAddress,
  type FileHandler,
  type FileOpArgs,
} from '@liveupdate/core';
import {
  KernelError,
  MAX_PAGE_ORDER,
  PAGE_SIZE,
  getOrder,
  type FileOperations,
  type Folio,
  type IommuDomain,
  type KernelLog,
  type KexecHandover,
} from '@liveupdate/kernel';
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  hex,
  type PhysicalMemory,
} from '@liveupdate/machine';
import { IommufdContext, type IommufdLuIncoming } from './iommufd-context.js';
import type { IommufdHwptPaging } from './iommufd-hwpt-paging.js';
import type { IommufdIoas, IoasKernel } from './iommufd-ioas.js';
import {
  IOMMUFD_LUO_COMPATIBLE,
  iommufdHwptLu,
  iommufdLu,
  iommufdLuSize,
} from './iommufd-lu-abi.js';

/** The seals a mapped memfd must have had at map time to be preserved. */
export const IOMMUFD_LU_REQUIRED_SEALS = F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK;

/** The most HWPTs one preserved iommufd can hand over: what the largest folio holds. */
const MAX_HWPTS = Math.floor(
  (PAGE_SIZE * 2 ** MAX_PAGE_ORDER - iommufdLu.size) / iommufdHwptLu.size,
);

/** What the iommufd-v1 handler needs of the kernel. */
export interface IommufdLuoKernel extends IoasKernel {
  readonly memory: PhysicalMemory;
  readonly kho: KexecHandover;
  readonly log: KernelLog;
}

/** What `preserve` leaves in `privateData` for `unpreserve`; this kernel only. */
interface IommufdPreservation {
  readonly ictx: IommufdContext;
  readonly serPhys: number;
  readonly hwpts: readonly IommufdHwptPaging[];
  readonly ioases: readonly IommufdIoas[];
}

/** One `iommufd_hwpt_lu` entry, read back. */
interface PreservedHwpt {
  readonly index: number;
  readonly token: number;
  readonly domainId: number;
  readonly pageTableRoot: number;
}

/**
 * The iommufd handed over to the new kernel (upstream `ictx->lu`): the `iommufd_lu` folio, which
 * this kernel owns from `retrieve` to `finish`, and the restored domains by token.
 */
class IommufdLuRestore implements IommufdLuIncoming {
  readonly #memory: PhysicalMemory;
  readonly #serPhys: number;
  readonly #folio: Folio;
  readonly #hwpts: Map<number, PreservedHwpt & { domain: IommuDomain; reclaimed: boolean }>;
  #finished = false;

  constructor(
    memory: PhysicalMemory,
    serPhys: number,
    folio: Folio,
    hwpts: readonly (PreservedHwpt & { domain: IommuDomain })[],
  ) {
    this.#memory = memory;
    this.#serPhys = serPhys;
    this.#folio = folio;
    this.#hwpts = new Map(hwpts.map((hwpt) => [hwpt.token, { ...hwpt, reclaimed: false }]));
  }

  reclaim(token: number): IommuDomain {
    const hwpt = this.#finished ? undefined : this.#hwpts.get(token);
    if (!hwpt || hwpt.reclaimed) {
      throw new KernelError(
        'ENOENT',
        `iommufd: no preserved HWPT with token ${token} left to restore`,
      );
    }
    hwpt.reclaimed = true;
    const at = this.#serPhys + iommufdLu.size + hwpt.index * iommufdHwptLu.size;
    this.#memory.writeU32(at + iommufdHwptLu.offsets.reclaimed, 1);
    return hwpt.domain;
  }

  namesDomain(domainId: number): boolean {
    return [...this.#hwpts.values()].some((hwpt) => hwpt.domain.id === domainId);
  }

  /** Every preserved HWPT was restored. */
  get allReclaimed(): boolean {
    return [...this.#hwpts.values()].every((hwpt) => hwpt.reclaimed);
  }

  /** The serialized folio, freed once at finish; no restore after that. */
  finish(): Folio | undefined {
    if (this.#finished) return undefined;
    this.#finished = true;
    return this.#folio;
  }
}

/**
 * The iommufd file handler, `"iommufd-v1"` (`drivers/iommu/iommufd/liveupdate.c` of the upstream
 * series): the HWPTs userspace marked with `IOMMU_HWPT_LU_SET_PRESERVE` cross the live update with
 * their IOMMU domains, so devices preserved on them (vfio-pci-v1) keep translating — and doing DMA
 * — through the same page tables while the kernel is replaced.
 *
 * - `preserve`: every area of each marked HWPT's IOAS must map a memfd that had
 *   `F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK` when it was mapped (`EINVAL`) and is preserved in
 *   the same session (`ENOENT`); then the IOASes become immutable (map/unmap `EBUSY`), each
 *   domain is preserved (`IommuDriver.preserveDomain`) and an `iommufd_lu` is written to a
 *   KHO-preserved folio whose address is `serializedData`. All or nothing. An iommufd with no
 *   marked HWPT is preserved with `nr_hwpts = 0`.
 * - `unpreserve`: undoes it all.
 * - `freeze`: nothing to do: everything preserved is immutable since `preserve`, and the
 *   domains' tables are handed over by the IOMMU driver, which keeps its handover current.
 * - `retrieve`: a new anonymous iommufd file whose context knows the preserved HWPTs by token;
 *   `IOMMU_HWPT_LU_RESTORE` gives each one as a HWPT around its restored domain.
 * - `canFinish`: the file was retrieved, every HWPT restored, and no device is attached to a
 *   restored HWPT's domain any more (moved to a new domain with a hitless replace).
 * - `finish`: frees the `iommufd_lu` folio; for a file never retrieved, also the restored domains
 *   no device uses (the IOMMU FLB frees any left when it finishes).
 */
export function createIommufdLuoHandler(
  kernel: IommufdLuoKernel,
  fops: FileOperations,
  retrieveIommuFlb: () => Promise<void>,
): FileHandler {
  const { memory, kho, pages, iommu, log, vfs } = kernel;
  /** Restored domains an iommufd retrieved in this kernel names: each belongs to one file. */
  const claimedDomains = new Set<number>();

  /**
   * The `iommufd_lu` at `serPhys`, checked against what `preserve` writes: `EINVAL` naming the
   * field and its value for a count past {@link MAX_HWPTS}, a non-zero reserved field, an entry
   * already reclaimed, a token or domain id listed twice, a domain id outside 1..65535, or a
   * page-table root that is not a non-zero page address.
   */
  const readHwpts = (serPhys: number): PreservedHwpt[] => {
    const header = iommufdLu.decode(memory.view(serPhys, iommufdLu.size));
    const malformed = (what: string): never => {
      throw new KernelError('EINVAL', `iommufd: iommufd_lu at ${hex(serPhys)}: ${what}`);
    };
    if (header.nr_hwpts > MAX_HWPTS) malformed(`nr_hwpts ${header.nr_hwpts} > ${MAX_HWPTS}`);
    if (header.__reserved !== 0) malformed(`__reserved is ${hex(header.__reserved)}, not 0`);
    const bytes = memory.view(serPhys, iommufdLuSize(header.nr_hwpts));
    const tokens = new Set<number>();
    const domainIds = new Set<number>();
    return Array.from({ length: header.nr_hwpts }, (_, index) => {
      const entry = iommufdHwptLu.decode(bytes, iommufdLu.size + index * iommufdHwptLu.size);
      const where = `hwpts[${index}]`;
      if (tokens.has(entry.token)) malformed(`${where}.token ${entry.token} is listed twice`);
      if (entry.reclaimed !== 0) malformed(`${where}.reclaimed is ${entry.reclaimed}, not 0`);
      if (entry.__reserved !== 0) {
        malformed(`${where}.__reserved is ${hex(entry.__reserved)}, not 0`);
      }
      if (entry.domain_id < 1 || entry.domain_id > 0xffff || domainIds.has(entry.domain_id)) {
        malformed(`${where}.domain_id ${entry.domain_id} is out of range or listed twice`);
      }
      if (entry.page_table_root === 0n || entry.page_table_root % BigInt(PAGE_SIZE) !== 0n) {
        malformed(`${where}.page_table_root ${hex(entry.page_table_root)} is not a page address`);
      }
      tokens.add(entry.token);
      domainIds.add(entry.domain_id);
      return {
        index,
        token: entry.token,
        domainId: entry.domain_id,
        pageTableRoot: Number(entry.page_table_root),
      };
    });
  };

  /**
   * Restore the folio holding the `iommufd_lu` at `serPhys` (with the order KHO recorded: it is
   * read only once restored), and check that its header's HWPT count is what preserve would have
   * put in a folio of that order. `EINVAL` otherwise, with the folio freed.
   */
  const restoreSer = (serPhys: number): Folio => {
    const folio = restoreSerializedFolio(kho, serPhys, undefined, 'iommufd_lu');
    const { nr_hwpts: count } = iommufdLu.decode(memory.view(serPhys, iommufdLu.size));
    if (count > MAX_HWPTS || getOrder(iommufdLuSize(count)) !== folio.order) {
      pages.freePages(folio);
      throw new KernelError(
        'EINVAL',
        `iommufd: ${count} HWPTs cannot have been preserved in a folio of order ${folio.order}`,
      );
    }
    return folio;
  };

  /** The restored domain an entry names, if the IOMMU driver restored it and it lives. */
  const restoredDomain = (hwpt: PreservedHwpt): IommuDomain | undefined =>
    iommu
      .restoredDomains()
      .find((d) => d.id === hwpt.domainId && d.pageTableRoot === hwpt.pageTableRoot);

  /** `retrieve`'s work; see the op. */
  const retrieveOne = async (args: FileOpArgs): Promise<void> => {
    await retrieveIommuFlb();
    const serPhys = serializedDataAddress(args.serializedData, memory, 'iommufd');
    const folio = restoreSer(serPhys);
    try {
      const hwpts = readHwpts(serPhys).map((hwpt) => {
        const domain = restoredDomain(hwpt);
        if (!domain) {
          throw new KernelError(
            'EINVAL',
            `iommufd: HWPT token ${hwpt.token}: IOMMU domain ${hwpt.domainId} (root ${hex(hwpt.pageTableRoot)}) is not in the IOMMU handover`,
          );
        }
        if (claimedDomains.has(domain.id)) {
          throw new KernelError(
            'EINVAL',
            `iommufd: HWPT token ${hwpt.token}: IOMMU domain ${domain.id} belongs to another retrieved iommufd`,
          );
        }
        return { ...hwpt, domain };
      });
      for (const hwpt of hwpts) claimedDomains.add(hwpt.domain.id);
      const ictx = new IommufdContext(kernel);
      ictx.lu = new IommufdLuRestore(memory, serPhys, folio, hwpts);
      args.file = vfs.anonInodeGetFile('iommufd', fops, ictx);
      log.debug(`iommufd: retrieved ${hwpts.length} preserved HWPTs`);
    } catch (error) {
      pages.freePages(folio);
      throw error;
    }
  };

  return defineHandler({
    compatible: IOMMUFD_LUO_COMPATIBLE,

    /** `can_preserve`: an iommufd file (`/dev/iommu` or one retrieved from a session). */
    canPreserve(_handler, file) {
      return file.privateData instanceof IommufdContext;
    },

    /** `preserve`: see the handler's description. All or nothing. */
    preserve(args) {
      const ictx = args.file?.privateData;
      if (!(ictx instanceof IommufdContext)) throw new KernelError('EINVAL', 'not an iommufd');
      if (ictx.luPreserved) throw new KernelError('EBUSY', 'iommufd: already preserved');
      const hwpts = ictx.markedHwpts;
      const ioases = [...new Set(hwpts.map((hwpt) => hwpt.ioas!))];
      for (const ioas of ioases) {
        for (const area of ioas.areas) {
          const where = `iommufd: IOAS ${ioas.id} mapping at ${hex(area.iova)}`;
          if ((area.seals & IOMMUFD_LU_REQUIRED_SEALS) !== IOMMUFD_LU_REQUIRED_SEALS) {
            throw new KernelError(
              'EINVAL',
              `${where}: its memfd lacked F_SEAL_SEAL|F_SEAL_GROW|F_SEAL_SHRINK when mapped (seals ${hex(area.seals)})`,
            );
          }
          try {
            args.session.getTokenOutgoing(area.file);
          } catch (error) {
            if (!KernelError.isInstance(error)) throw error;
            throw new KernelError(
              error.code,
              `${where}: its memfd is not preserved in session "${args.session.name}"`,
              { cause: error },
            );
          }
        }
      }
      const undo: (() => void)[] = [];
      try {
        ictx.luPreserved = true;
        undo.push(() => (ictx.luPreserved = false));
        for (const ioas of ioases) {
          ioas.luImmutable = true;
          undo.push(() => (ioas.luImmutable = false));
        }
        for (const hwpt of hwpts) {
          iommu.preserveDomain(hwpt.domain);
          undo.push(() => iommu.unpreserveDomain(hwpt.domain));
        }
        const serPhys = kho.allocPreserve(iommufdLuSize(hwpts.length));
        undo.push(() => kho.unpreserveFree(serPhys));
        const bytes = memory.view(serPhys, iommufdLuSize(hwpts.length));
        iommufdLu.encodeInto(bytes, 0, { nr_hwpts: hwpts.length, __reserved: 0 });
        hwpts.forEach((hwpt, i) => {
          iommufdHwptLu.encodeInto(bytes, iommufdLu.size + i * iommufdHwptLu.size, {
            token: hwpt.luToken!,
            reclaimed: 0,
            domain_id: hwpt.domain.id,
            __reserved: 0,
            page_table_root: BigInt(hwpt.domain.pageTableRoot),
          });
        });
        const preservation: IommufdPreservation = { ictx, serPhys, hwpts, ioases };
        args.serializedData = BigInt(serPhys);
        args.privateData = preservation;
        log.debug(`iommufd: preserved ${hwpts.length} HWPTs at ${hex(serPhys)}`);
      } catch (error) {
        for (const step of undo.reverse()) step();
        throw error;
      }
    },

    /** `unpreserve`: the domains unpreserved, the IOASes mutable again, the folio freed. */
    unpreserve(args) {
      const preservation = args.privateData as IommufdPreservation | undefined;
      if (!preservation) throw new KernelError('EINVAL', 'iommufd: unpreserve without preserve');
      const { ictx, serPhys, hwpts, ioases } = preservation;
      kho.unpreserveFree(serPhys);
      for (const hwpt of [...hwpts].reverse()) iommu.unpreserveDomain(hwpt.domain);
      for (const ioas of ioases) ioas.luImmutable = false;
      ictx.luPreserved = false;
      args.privateData = undefined;
    },

    /**
     * `freeze`: nothing. The marks and the IOASes are immutable since `preserve`, and the IOMMU
     * driver keeps its own handover current at every preserve, so nothing changed since.
     */
    freeze() {},

    /**
     * `retrieve`: a new iommufd (anonymous file, `/dev/iommu`'s operations) that knows the
     * preserved HWPTs by token. The IOMMU FLB is retrieved first (its errno fails this file).
     * `EINVAL` for missing or malformed data, for an entry naming a domain the IOMMU driver did
     * not restore, or one another retrieved iommufd already names; on failure the folio is
     * freed.
     */
    async retrieve(args) {
      try {
        await retrieveOne(args);
      } catch (error) {
        log.err(
          `iommufd: session "${args.session.name}": retrieve of the iommufd at ${hex(args.serializedData)} refused: ${(error as Error).message}`,
        );
        throw error;
      }
    },

    /**
     * `can_finish`: retrieved, every preserved HWPT restored, and no restored HWPT's domain with
     * a device attached.
     */
    canFinish(args) {
      if (args.retrieveStatus !== 1 || !args.file) return false;
      const ictx = args.file.privateData as IommufdContext;
      const lu = ictx.lu as IommufdLuRestore | undefined;
      if (!lu?.allReclaimed) return false;
      return ictx.objects.every(
        (object) =>
          object.type !== 'hwpt_paging' || !object.restored || !iommu.hasAttachments(object.domain),
      );
    },

    /**
     * `finish`: free the `iommufd_lu` folio. For a file never retrieved, also free the restored
     * domains it names that no device translates through.
     */
    finish(args) {
      if (args.retrieveStatus === 1 && args.file) {
        const lu = (args.file.privateData as IommufdContext).lu as IommufdLuRestore | undefined;
        const folio = lu?.finish();
        if (folio) pages.freePages(folio);
        return;
      }
      if (args.retrieveStatus !== 0) return;
      const serPhys = serializedDataAddress(args.serializedData, memory, 'iommufd');
      const folio = restoreSer(serPhys);
      try {
        for (const hwpt of readHwpts(serPhys)) {
          const domain = restoredDomain(hwpt);
          if (domain && !iommu.hasAttachments(domain)) iommu.freeDomain(domain);
        }
      } finally {
        pages.freePages(folio);
      }
    },
  });
}
