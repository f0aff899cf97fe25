import { vfioRehearsal } from './vfio-rehearsal.js';
import { registerFileHandler, registerFlb } from '@liveupdate/core';
import {
  PCI_BUS_SERVICE,
  defineModule,
  type ModuleContext,
  type PciDevice,
  type PciDriver,
  type ServiceKey,
} from '@liveupdate/kernel';
import { KernelError } from '@liveupdate/machine';
import { IOMMU_FLB_SERVICE } from '@liveupdate/plugin-iommufd';
import { createVfioFileOperations } from './vfio-file-operations.js';
import { VfioPciDevice } from './vfio-pci-device.js';
import { VFIO_PCI_LUO_COMPATIBLE } from './vfio-pci-luo-abi.js';
import { createVfioPciLuoHandler } from './vfio-pci-luo-handler.js';

/**
 * The vfio-pci devices of this boot, in `ctx.services` under {@link VFIO_SERVICE}: the live-update
 * handler and tests find a device's cdev through it.
 */
export class VfioDevices {
  readonly #devices: VfioPciDevice[] = [];

  /** Every device vfio-pci drives, by minor number. */
  get devices(): readonly VfioPciDevice[] {
    return this.#devices;
  }

  /** @internal */
  add(device: VfioPciDevice): void {
    this.#devices.push(device);
  }

  /** The vfio device of the PCI function `pci`, if vfio-pci drives it. */
  of(pci: PciDevice): VfioPciDevice | undefined {
    return this.#devices.find((d) => d.pci === pci);
  }
}

/** The key of this boot's {@link VfioDevices}. */
export const VFIO_SERVICE: ServiceKey<VfioDevices> = Symbol.for('liveupdate.plugin-vfio.devices');

/**
 * Parse `vfio-pci.ids=vvvv:dddd[,vvvv:dddd…]` (hex vendor and device ids), the module parameter
 * that names the devices vfio-pci claims. `EINVAL` for a malformed list.
 */
export function parseVfioPciIds(text: string): { vendor: number; device: number }[] {
  return text.split(',').map((entry) => {
    const match = /^([0-9a-f]{4}):([0-9a-f]{4})$/i.exec(entry.trim());
    if (!match) throw new KernelError('EINVAL', `vfio-pci.ids: bad entry ${JSON.stringify(entry)}`);
    return { vendor: Number.parseInt(match[1]!, 16), device: Number.parseInt(match[2]!, 16) };
  });
}

/**
 * The vfio-pci kernel module: binds the vfio-pci driver to PCI functions and gives each a cdev,
 * `/dev/vfio/devices/vfioN`, numbered from 0 in bus order. It claims the functions listed in
 * `vfio-pci.ids=` on the kernel command line, or, without it, every function no driver loaded
 * before it has bound (the machine's devices are there to be passed through). Needs the iommufd
 * module (`@liveupdate/plugin-iommufd`) loaded before it to be of use: a device is driven only
 * once bound to an iommufd.
 *
 * With LUO (`@liveupdate/core/module` listed before it and `liveupdate` on), it registers the
 * `"vfio-pci-v1"` file handler and links the iommufd module's IOMMU FLB (`IOMMU_FLB_SERVICE`) to it; without LUO, devices
 * work and cannot be preserved. After a live update, devices the previous kernel preserved are
 * claimed for their session: their cdev opens with `EBUSY` until the session finishes.
 */
export const vfioModule = defineModule({
  name: 'vfio-pci',
  reads: [VFIO_PCI_LUO_COMPATIBLE],
  rehearse: vfioRehearsal,
  init(ctx) {
    const bus = ctx.services.get(PCI_BUS_SERVICE);
    const vfio = new VfioDevices();
    ctx.services.provide(VFIO_SERVICE, vfio);
    if (!bus) {
      ctx.log.info('vfio-pci: no PCI bus');
      return;
    }
    const param = ctx.cmdline.get('vfio-pci.ids');
    const ids =
      param === undefined
        ? bus.devices.filter((d) => !d.driver).map((d) => ({ vendor: d.vendor, device: d.device }))
        : parseVfioPciIds(param);
    const driver: PciDriver = {
      name: 'vfio-pci',
      ids,
      probe(pci) {
        const device = new VfioPciDevice(vfio.devices.length, pci, ctx);
        ctx.vfs.registerCharDevice(device.path, createVfioFileOperations(device));
        vfio.add(device);
        ctx.log.info(`vfio-pci ${pci.name}: ${device.path}`);
      },
    };
    bus.registerDriver(driver);
    registerLiveUpdate(ctx, vfio);
  },
});

/**
 * Register `vfio-pci-v1` and link the iommufd module's IOMMU FLB to it; skipped (logged) when LUO
 * is absent or off, or when the iommufd module is not loaded before vfio.
 */
function registerLiveUpdate(ctx: ModuleContext, vfio: VfioDevices): void {
  const iommuFlb = ctx.services.get(IOMMU_FLB_SERVICE);
  if (!iommuFlb) {
    ctx.log.info('vfio-pci: no iommufd module loaded before vfio; devices cannot be preserved');
    return;
  }
  const handler = createVfioPciLuoHandler(ctx, vfio, iommuFlb);
  try {
    registerFileHandler(ctx, handler);
  } catch (error) {
    if (!KernelError.isInstance(error) || error.code !== 'EOPNOTSUPP') throw error;
    ctx.log.info('vfio-pci: live update is not available; devices cannot be preserved');
    return;
  }
  registerFlb(ctx, handler, iommuFlb);
}
