import { afterEach } from 'vitest';
import { KernelError, type Process } from '@liveupdate/machine';
import { IommufdDevice } from '@liveupdate/plugin-iommufd';
import { VfioDevice } from '../src/index.js';
import {
  bootForLiveUpdate,
  testkitStats,
  type BootForLiveUpdateOptions,
  type LiveUpdateHarness,
} from '@liveupdate/testkit';

export const NIC_BDF = '00:03.0';
export const COPY_BDF = '00:04.0';
/** vfio-pci numbers its cdevs in bus order: the NIC first, then the copy engine. */
export const NIC_CDEV = '/dev/vfio/devices/vfio0';
export const COPY_CDEV = '/dev/vfio/devices/vfio1';
export const POISON = 0xaa;

const harnesses: LiveUpdateHarness[] = [];
afterEach(async () => {
  await Promise.all(harnesses.splice(0).map((h) => h.shutdown()));
});

/** A kernel with LUO, memfd, iommufd and vfio-pci, a NIC and a copy engine; shut down after the test. */
export async function bootVfio(
  options: {
    packetsPerSecond?: number;
    /** The copy engine's rate (`DeviceSpec`'s `copiesPerSecond`); default no limit. */
    copiesPerSecond?: number;
    ramBytes?: number;
    cmdline?: string;
    onHandover?: BootForLiveUpdateOptions['onHandover'];
  } = {},
): Promise<LiveUpdateHarness> {
  const harness = await bootForLiveUpdate({
    modules: ['@liveupdate/plugin-memfd', '@liveupdate/plugin-iommufd', '@liveupdate/plugin-vfio'],
    moduleBase: import.meta.url,
    ...(options.ramBytes === undefined ? {} : { ramBytes: options.ramBytes }),
    ...(options.cmdline === undefined ? {} : { cmdline: options.cmdline }),
    ...(options.onHandover === undefined ? {} : { onHandover: options.onHandover }),
    devices: [
      { kind: 'nic', bdf: NIC_BDF, packetsPerSecond: options.packetsPerSecond ?? 2000 },
      {
        kind: 'dma-copy',
        bdf: COPY_BDF,
        ...(options.copiesPerSecond === undefined
          ? {}
          : { copiesPerSecond: options.copiesPerSecond }),
      },
    ],
  });
  harnesses.push(harness);
  return harness;
}

/**
 * The IOMMU driver allocates a bus's context table at the first attach there and keeps it for the
 * life of the kernel, as VT-d does. Attach once, then close everything, so a test's baseline of
 * {@link testkitStats} already counts it.
 */
export async function warmUpIommu(process: Process): Promise<void> {
  const iommufd = await IommufdDevice.open(process);
  const nic = await VfioDevice.open(process, NIC_CDEV);
  await nic.bindIommufd(iommufd.fd);
  await nic.attach(await iommufd.allocIoas());
  await nic.close();
  await iommufd.close();
}

/** Read a non-blocking eventfd's counter: 0 when it is not signalled (`EAGAIN`). */
export async function readEventfd(process: Process, fd: number): Promise<number> {
  try {
    const bytes = await process.read(fd, 8);
    return Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  } catch (error) {
    if (KernelError.isInstance(error) && error.code === 'EAGAIN') return 0;
    throw error;
  }
}

export { testkitStats };
export type { Process };

export { errnoOf } from '@liveupdate/testkit';
