import {
  defineHandler,
  restoreSerializedFolio,
  serializedDataAddress,
  type FileHandler,
  type FileOpArgs,
  type LiveUpdateFlb,
} from '@liveupdate/core';
import {
  IOMMU_SERVICE,
  KernelError,
  PCI_BUS_SERVICE,
  type File,
  type IommuDriver,
  type ModuleContext,
  type PciBus,
} from '@liveupdate/kernel';
import { PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, hex } from '@liveupdate/machine';
import { IommufdContext, retrieveIommuFlbFor } from '@liveupdate/plugin-iommufd';
import { createVfioFileOperations } from './vfio-file-operations.js';
import type { VfioDevices } from './vfio-module.js';
import { VfioPciDevice } from './vfio-pci-device.js';
import { VFIO_PCI_LUO_COMPATIBLE, vfioPciCoreDeviceSer } from './vfio-pci-luo-abi.js';

/** The kernel command-line switch that makes `freeze` reset the device, as upstream does today. */
export const VFIO_PCI_RESET_ON_FREEZE = 'vfio-pci.reset_on_freeze';

/** What `preserve` leaves in `privateData`; this kernel only. */
interface VfioPreservation {
  readonly device: VfioPciDevice;
  readonly serPhys: number;
  /** `PCI_COMMAND` before a `reset_on_freeze` freeze, for `unfreeze`. */
  commandBeforeFreeze?: number;
}

type VfioPciCoreDeviceSer = ReturnType<typeof vfioPciCoreDeviceSer.decode>;

/**
 * The vfio-pci file handler, `"vfio-pci-v1"` (`drivers/vfio/pci/vfio_pci_liveupdate.c`): a
 * passthrough device keeps running — bus mastering, its rings, its DMA through the same IOMMU page
 * tables — while the kernel is replaced, and the next kernel hands it back to the VMM.
 *
 * - `canPreserve`: a vfio-pci device cdev file.
 * - `preserve`: `EINVAL` unless the file has bound the device to an iommufd
 *   (`VFIO_DEVICE_BIND_IOMMUFD`); `ENOENT` unless that iommufd is preserved earlier in the same
 *   session; `EINVAL` unless the attached HWPT is marked with `IOMMU_HWPT_LU_SET_PRESERVE`. Then
 *   the IOMMU keeps the device translated through the HWPT's domain
 *   (`iommu.preserveDevice`, `EBUSY` when already preserved) and the PCI core keeps it out of
 *   reset with bus mastering on at kexec (`pci.preserve`), and a preserved page receives
 *   `vfio_pci_core_device_ser`. All or nothing.
 * - `freeze`: `EINVAL` while interrupts are enabled ("Freeze failed! Interrupts are still
 *   enabled."). The device is not touched: it keeps doing DMA through the kexec. With
 *   `vfio-pci.reset_on_freeze=1` on the command line it is reset and `PCI_COMMAND` set to
 *   `INTX_DISABLE` (bus mastering off), what upstream does today; `unfreeze` then restores
 *   `PCI_COMMAND`, but the device's rings are lost with the reset.
 * - `unpreserve`: undoes `preserve`.
 * - `retrieve` (next kernel): the IOMMU FLB first (its errno fails this file); then the device
 *   of `(domain, bdf)` (`ENOENT` when vfio-pci does not drive it, `EINVAL` when the previous
 *   kernel did not preserve it, another file already named it, the IOMMU handover restored no
 *   domain for it, or `iommufd_token` is not an iommufd of the session that preserved that
 *   domain) as a new cdev file that is not reset, whose `VFIO_DEVICE_BIND_IOMMUFD` must name
 *   the iommufd of the token (retrieved now through the session if nobody has). A refused file
 *   leaves its device as the boot left it: claimed (its cdev `EBUSY`), translating through its
 *   restored domain.
 * - `canFinish`: the file was retrieved and has bound the device to an iommufd.
 * - `finish`: `pci.finishIncoming`; from then on the cdev opens normally. A file that was never
 *   retrieved (only reachable when LUO finishes without `canFinish`, i.e. never today) has its
 *   device stopped, reset and detached from the IOMMU first, so its DMA cannot outlive the memory
 *   it was given.
 *
 * The iommufd's shared state (its IOMMU FLB, `IOMMU_FLB_SERVICE`) is linked to this handler too by the vfio module, so
 * it stays preserved while any device is.
 */
export function createVfioPciLuoHandler(
  ctx: ModuleContext,
  vfio: VfioDevices,
  iommuFlb: LiveUpdateFlb,
): FileHandler {
  const { kho, memory, log } = ctx;
  /** Devices a `vfio_pci_core_device_ser` of this kernel named: each crosses in one file. */
  const retrievedBdfs = new Set<number>();
  const resetOnFreeze = ctx.cmdline.bool(VFIO_PCI_RESET_ON_FREEZE, false);
  const serOrder = 0;

  const iommu = (): IommuDriver => {
    const driver = ctx.services.get(IOMMU_SERVICE);
    if (!driver) throw new KernelError('EOPNOTSUPP', 'vfio-pci: no IOMMU driver');
    return driver;
  };
  const pciBus = (): PciBus => {
    const bus = ctx.services.get(PCI_BUS_SERVICE);
    if (!bus) throw new KernelError('EOPNOTSUPP', 'vfio-pci: no PCI bus');
    return bus;
  };
  const deviceOf = (file: File | null): VfioPciDevice | undefined =>
    file?.privateData instanceof VfioPciDevice ? file.privateData : undefined;
  const preservationOf = (args: FileOpArgs): VfioPreservation => {
    const preservation = args.privateData as VfioPreservation | undefined;
    if (!preservation) throw new KernelError('EINVAL', 'vfio-pci: not preserved');
    return preservation;
  };
  const readSer = (phys: number): VfioPciCoreDeviceSer =>
    vfioPciCoreDeviceSer.decode(memory.view(phys, vfioPciCoreDeviceSer.size));
  /** The device of a `vfio_pci_core_device_ser`, checked: `ENOENT` unknown, `EINVAL` not incoming. */
  const incomingDevice = (ser: VfioPciCoreDeviceSer): VfioPciDevice => {
    if (ser.domain !== 0 || ser.reserved !== 0) {
      throw new KernelError(
        'EINVAL',
        `vfio-pci: no PCI segment ${ser.domain} (reserved ${ser.reserved}) on this machine`,
      );
    }
    const device = vfio.devices.find((d) => d.pci.bdf === ser.bdf);
    if (!device) {
      throw new KernelError('ENOENT', `vfio-pci: no vfio device at ${hex(ser.bdf)}`);
    }
    if (!device.pci.incoming) {
      throw new KernelError(
        'EINVAL',
        `vfio-pci ${device.pci.name}: the previous kernel did not preserve it`,
      );
    }
    return device;
  };

  /** `retrieve`'s work; see the op. */
  const retrieveOne = async (args: FileOpArgs): Promise<void> => {
    await retrieveIommuFlbFor(ctx, iommuFlb, 'vfio-pci');
    const serPhys = serializedDataAddress(args.serializedData, memory, 'vfio-pci');
    const serFolio = restoreSerializedFolio(kho, serPhys, serOrder, 'vfio_pci_core_device_ser');
    let ser: VfioPciCoreDeviceSer;
    try {
      ser = readSer(serPhys);
    } finally {
      ctx.pages.freePages(serFolio);
    }
    const device = incomingDevice(ser);
    const where = `vfio-pci ${device.pci.name}: vfio_pci_core_device_ser at ${hex(serPhys)}`;
    if (retrievedBdfs.has(ser.bdf)) {
      throw new KernelError('EINVAL', `${where}: bdf ${hex(ser.bdf)} is another file's device`);
    }
    const domain = iommu().restoredDomainOf(ser.bdf);
    if (!domain) {
      throw new KernelError(
        'EINVAL',
        `${where}: the IOMMU handover restored no domain for bdf ${hex(ser.bdf)}`,
      );
    }
    const iommufd = await args.session.getFileIncoming(ser.iommufdToken);
    const lu = iommufd.privateData instanceof IommufdContext ? iommufd.privateData.lu : undefined;
    if (!lu?.namesDomain(domain.id)) {
      throw new KernelError(
        'EINVAL',
        `${where}: iommufd_token ${ser.iommufdToken} is not an iommufd that preserved the device's IOMMU domain ${domain.id}`,
      );
    }
    retrievedBdfs.add(ser.bdf);
    const file = ctx.vfs.anonInodeGetFile('vfio-device', createVfioFileOperations(device), device);
    device.openRetrieved(iommufd);
    args.file = file;
    log.info(`vfio-pci ${device.pci.name}: retrieved, left running`);
  };

  return defineHandler({
    compatible: VFIO_PCI_LUO_COMPATIBLE,

    /** `can_preserve`: a vfio-pci device cdev file. */
    canPreserve(_handler, file) {
      return deviceOf(file) !== undefined;
    },

    /** `preserve`: see the handler's description. */
    preserve(args) {
      const device = deviceOf(args.file);
      if (!args.file || !device) throw new KernelError('EINVAL', 'vfio-pci: not a vfio device');
      const binding = device.isBoundBy(args.file) ? device.binding : undefined;
      if (!binding) {
        throw new KernelError('EINVAL', `vfio-pci ${device.pci.name}: not bound to an iommufd`);
      }
      // ENOENT when the iommufd is not preserved (earlier) in this session.
      const iommufdToken = args.session.getTokenOutgoing(binding.iommufdFile);
      const hwpt = binding.preservedHwpt();
      if (!hwpt) {
        throw new KernelError(
          'EINVAL',
          `vfio-pci ${device.pci.name}: its HWPT is not marked with IOMMU_HWPT_LU_SET_PRESERVE`,
        );
      }
      const { bdf } = device.pci;
      const undo: (() => void)[] = [];
      try {
        iommu().preserveDevice(bdf, hwpt.domain);
        undo.push(() => iommu().unpreserveDevice(bdf));
        pciBus().preserve(bdf);
        undo.push(() => pciBus().unpreserve(bdf));
        const serPhys = kho.allocPreserve(vfioPciCoreDeviceSer.size);
        vfioPciCoreDeviceSer.encodeInto(memory.view(serPhys, vfioPciCoreDeviceSer.size), 0, {
          domain: 0,
          bdf,
          reserved: 0,
          iommufdToken,
        });
        const preservation: VfioPreservation = { device, serPhys };
        args.serializedData = BigInt(serPhys);
        args.privateData = preservation;
        log.info(
          `vfio-pci ${device.pci.name}: preserved on IOMMU domain ${hwpt.domain.id} (iommufd token ${iommufdToken})`,
        );
      } catch (error) {
        for (const step of undo.reverse()) step();
        throw error;
      }
    },

    /** `unpreserve`: release the serialized page, the PCI and the IOMMU preservation. */
    unpreserve(args) {
      const { device, serPhys } = preservationOf(args);
      kho.unpreserveFree(serPhys);
      pciBus().unpreserve(device.pci.bdf);
      iommu().unpreserveDevice(device.pci.bdf);
      args.privateData = undefined;
    },

    /** `freeze`: interrupts must be off; the device keeps running unless `reset_on_freeze`. */
    freeze(args) {
      const preservation = preservationOf(args);
      const { device } = preservation;
      if (device.interruptsEnabled) {
        throw new KernelError(
          'EINVAL',
          `vfio-pci ${device.pci.name}: Freeze failed! Interrupts are still enabled.`,
        );
      }
      if (!resetOnFreeze) return;
      preservation.commandBeforeFreeze = device.pci.readConfig16(PCI_COMMAND);
      device.pci.reset();
      device.pci.writeConfig16(PCI_COMMAND, PCI_COMMAND_INTX_DISABLE);
      log.info(`vfio-pci ${device.pci.name}: reset at freeze (${VFIO_PCI_RESET_ON_FREEZE})`);
    },

    /** `unfreeze`: after a `reset_on_freeze` freeze, give the device its command register back. */
    unfreeze(args) {
      const preservation = preservationOf(args);
      if (preservation.commandBeforeFreeze === undefined) return;
      preservation.device.pci.writeConfig16(PCI_COMMAND, preservation.commandBeforeFreeze);
      preservation.commandBeforeFreeze = undefined;
    },

    /** `retrieve`: see the handler's description; a refusal is logged. */
    async retrieve(args) {
      try {
        await retrieveOne(args);
      } catch (error) {
        log.err(
          `vfio-pci: session "${args.session.name}": retrieve of the device at ${hex(args.serializedData)} refused: ${(error as Error).message}`,
        );
        throw error;
      }
    },

    /** `can_finish`: retrieved, and bound to an iommufd by the retrieved file. */
    canFinish(args) {
      const device = deviceOf(args.file);
      return args.retrieveStatus > 0 && device !== undefined && device.isBoundBy(args.file!);
    },

    /** `finish`: the device is an ordinary vfio-pci device again. */
    finish(args) {
      let device = deviceOf(args.file);
      if (!device) {
        // Never retrieved: read the page, then stop the device before its memory goes.
        const serPhys = serializedDataAddress(args.serializedData, memory, 'vfio-pci');
        const serFolio = restoreSerializedFolio(kho, serPhys, serOrder, 'vfio_pci_core_device_ser');
        try {
          device = incomingDevice(readSer(serPhys));
        } finally {
          ctx.pages.freePages(serFolio);
        }
        device.pci.setMaster(false);
        device.pci.reset();
        iommu().detachDevice(device.pci.bdf);
        log.info(`vfio-pci ${device.pci.name}: never retrieved; stopped and detached`);
      }
      device.finishIncoming();
      pciBus().finishIncoming(device.pci.bdf);
    },
  });
}
