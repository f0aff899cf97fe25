import {
  defineFlb,
  flbGetIncoming,
  restoreSerializedFolio,
  serializedDataAddress,
  type LiveUpdateFlb,
} from '@liveupdate/core';
import {
  KernelError,
  type IommuDriver,
  type KernelLog,
  type KexecHandover,
  type ModuleContext,
  type PageAllocator,
  type ServiceKey,
} from '@liveupdate/kernel';
import { hex, type PhysicalMemory } from '@liveupdate/machine';
import { restoredDomainsInUse } from './iommufd-context.js';
import { IOMMU_FLB_COMPATIBLE, IOMMU_LU_FLB_VERSION, iommuLuFlbSer } from './iommufd-lu-abi.js';

/** What the IOMMU FLB's ops use of the kernel they run in. */
export interface IommuFlbKernel {
  readonly memory: PhysicalMemory;
  readonly pages: PageAllocator;
  readonly kho: KexecHandover;
  readonly log: KernelLog;
  readonly iommu: IommuDriver;
}

/**
 * This boot's IOMMU FLB, in `ctx.services`: the iommufd module creates it and links it to
 * `iommufd-v1`; a module whose files depend on the IOMMU's preserved state (vfio-pci) links the
 * same object to its own handler with `registerFlb(ctx, handler, ctx.services.get(IOMMU_FLB_SERVICE))`.
 */
export const IOMMU_FLB_SERVICE: ServiceKey<LiveUpdateFlb> = Symbol.for(
  'liveupdate.plugin-iommufd.iommu-flb',
);

/**
 * The IOMMU's file-lifecycle-bound object, `"iommu-liveupdate-v1"` (upstream's
 * `IOMMU_LUO_FLB_COMPATIBLE` FLB): the IOMMU live-update state every iommufd and vfio-pci file
 * shares. The iommufd module creates one per boot, links it to `iommufd-v1` and provides it as
 * {@link IOMMU_FLB_SERVICE}; the vfio module links the same object to `vfio-pci-v1`; LUO refcounts
 * it across both.
 *
 * The IOMMU driver itself hands over its tables and preserved domains (its KHO subtree, kept
 * current at every preserve); the FLB's own data is one `iommu_lu_flb_ser` recording the version.
 *
 * - `preserve` (first linked file preserved): writes the version into a KHO-preserved folio.
 * - `unpreserve` (last linked file unpreserved): frees it.
 * - `retrieve` (new kernel): reads and frees it; a version other than 1 or a non-zero reserved
 *   field is `EINVAL`. The iommufd and vfio-pci handlers retrieve it before they read anything
 *   of their own, so a refused FLB fails every file that depends on it with that errno (LUO keeps
 *   the failure sticky).
 * - `finish` (after the last linked file finished): frees every restored domain nobody reclaimed —
 *   no restored HWPT wraps it and no device translates through it — so the previous kernel's
 *   page tables do not stay reserved forever. A domain a device still uses is left (logged).
 */
export function createIommuFlb(kernel: IommuFlbKernel): LiveUpdateFlb {
  return defineFlb({
    compatible: IOMMU_FLB_COMPATIBLE,

    preserve(args) {
      const { kho, memory } = kernel;
      const phys = kho.allocPreserve(iommuLuFlbSer.size);
      iommuLuFlbSer.encodeInto(memory.view(phys, iommuLuFlbSer.size), 0, {
        version: IOMMU_LU_FLB_VERSION,
        __reserved: 0,
      });
      args.data = BigInt(phys);
    },

    unpreserve(args) {
      kernel.kho.unpreserveFree(Number(args.data));
    },

    retrieve(args) {
      const { kho, memory, pages } = kernel;
      const phys = serializedDataAddress(args.data, memory, 'IOMMU FLB');
      const folio = restoreSerializedFolio(kho, phys, 0, 'iommu_lu_flb_ser');
      const ser = iommuLuFlbSer.decode(memory.view(phys, iommuLuFlbSer.size));
      // The folio is this kernel's from now on, whatever its content: a refused FLB leaks nothing.
      pages.freePages(folio);
      const where = `IOMMU FLB: iommu_lu_flb_ser at ${hex(phys)}`;
      if (ser.version !== IOMMU_LU_FLB_VERSION) {
        throw new KernelError(
          'EINVAL',
          `${where}: version ${ser.version} is not ${IOMMU_LU_FLB_VERSION}`,
        );
      }
      if (ser.__reserved !== 0) {
        throw new KernelError('EINVAL', `${where}: __reserved is ${hex(ser.__reserved)}, not 0`);
      }
      args.obj = { version: ser.version };
    },

    finish() {
      const { iommu, log } = kernel;
      const inUse = restoredDomainsInUse(iommu);
      let freed = 0;
      let kept = 0;
      for (const domain of iommu.restoredDomains()) {
        if (inUse.has(domain.id)) continue;
        if (iommu.hasAttachments(domain)) {
          kept++;
          continue;
        }
        iommu.freeDomain(domain);
        freed++;
      }
      log.info(
        `IOMMU FLB: finished; freed ${freed} unreclaimed restored domains` +
          (kept > 0 ? `, ${kept} still translate devices` : ''),
      );
    },
  });
}

/**
 * Retrieve the IOMMU FLB for a file that depends on it (iommufd-v1, vfio-pci-v1), before the
 * file's own data is read: its errno when it was refused (sticky), and `EINVAL` when the handover
 * has no IOMMU FLB, or it finished, although a file linked to it was handed over (LUO writes an
 * FLB whenever a linked file is preserved, and finishes it only after the last one).
 */
export async function retrieveIommuFlbFor(
  ctx: ModuleContext,
  flb: LiveUpdateFlb,
  owner: string,
): Promise<void> {
  try {
    await flbGetIncoming(ctx, flb);
  } catch (error) {
    if (!KernelError.isInstance(error) || error.code !== 'ENOENT') throw error;
    throw new KernelError(
      'EINVAL',
      `${owner}: the handover has no live IOMMU FLB "${flb.compatible}", though this file depends on it (${error.message})`,
      { cause: error },
    );
  }
}
