import { LiveUpdateDevice } from '@liveupdate/core';
import type { ModuleRehearsal } from '@liveupdate/kernel';
import {
  F_ADD_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  KernelError,
  MFD_ALLOW_SEALING,
  type Process,
} from '@liveupdate/machine';
import { IommufdDevice } from '@liveupdate/plugin-iommufd';
import { VfioDevice } from './vfio-device.js';
import { VFIO_DEVICES_DIR } from './vfio-pci-device.js';

/** The session, tokens and HWPT token of the rehearsal: constants, so nothing but them crosses. */
const SESSION = 'vfio-rehearsal';
const TOKENS = { memory: 1, iommufd: 2, device: 3 } as const;
const HWPT_TOKEN = 1;
/** The DMA space: one memfd of 2 MiB mapped at IOVA 0. */
const DMA_BYTES = 2 * 1024 * 1024;
/** The first device vfio-pci took; the rehearsal's machine has the same devices as the real one. */
const DEVICE = `${VFIO_DEVICES_DIR}/vfio0`;

/** The first device's cdev, open; `undefined` when the machine has no device for vfio-pci. */
async function openDevice(process: Process): Promise<VfioDevice | undefined> {
  try {
    return await VfioDevice.open(process, DEVICE);
  } catch (error) {
    if (KernelError.isInstance(error) && error.code === 'ENOENT') return undefined;
    throw error;
  }
}

/**
 * The vfio-pci module's rehearsal (see `ModuleRehearsal` of `@liveupdate/kernel`): what a VMM
 * does with a passthrough device across a live update, on the first device of the rehearsal's
 * private machine (none: nothing to rehearse). Before: a memfd mapped into an IOAS of an iommufd,
 * the device bound and attached to a HWPT marked for preservation, the three preserved in a LUO
 * session. After: retrieve them, restore the HWPT, bind the device again, move it onto a new HWPT
 * of a new IOAS, drop the restored one and finish. The device's DMA engine does not run in the
 * private machine; its registers and the IOMMU's are private too.
 */
export const vfioRehearsal: ModuleRehearsal = {
  async before(process) {
    const device = await openDevice(process);
    if (!device) return;
    // Sealed against size changes, as a VMM's guest RAM must be for its iommufd to be preserved.
    const memory = await process.memfdCreate(SESSION, MFD_ALLOW_SEALING);
    await process.ftruncate(memory, DMA_BYTES);
    await process.fcntl(memory, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_GROW | F_SEAL_SHRINK);
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    await iommufd.mapFile(ioas, { fd: memory, length: DMA_BYTES, iova: 0 });
    const devId = await device.bindIommufd(iommufd.fd);
    const hwpt = await iommufd.hwptAlloc(devId, ioas);
    await device.attach(hwpt);
    await iommufd.hwptLuSetPreserve(hwpt, HWPT_TOKEN);
    const luo = await LiveUpdateDevice.open(process);
    const session = await luo.createSession(SESSION);
    await session.preserveFd(memory, TOKENS.memory);
    await session.preserveFd(iommufd.fd, TOKENS.iommufd);
    await session.preserveFd(device.fd, TOKENS.device);
    await device.disableInterrupts();
    await luo.close();
  },
  async after(process) {
    const luo = await LiveUpdateDevice.open(process);
    let session;
    try {
      session = await luo.retrieveSession(SESSION);
    } catch (error) {
      // No session: the machine had no device, and `before` preserved nothing.
      if (KernelError.isInstance(error) && error.code === 'ENOENT') return luo.close();
      throw error;
    }
    const memory = await session.retrieveFd(TOKENS.memory);
    const iommufd = IommufdDevice.fromFd(process, await session.retrieveFd(TOKENS.iommufd));
    const device = VfioDevice.fromFd(process, await session.retrieveFd(TOKENS.device));
    const restored = await iommufd.hwptLuRestore(HWPT_TOKEN);
    const devId = await device.bindIommufd(iommufd.fd);
    const ioas = await iommufd.allocIoas();
    await iommufd.mapFile(ioas, { fd: memory, length: DMA_BYTES, iova: 0 });
    await device.attach(await iommufd.hwptAlloc(devId, ioas));
    await iommufd.destroy(restored);
    await session.finish();
    await session.close();
    await device.close();
    await iommufd.close();
    await process.close(memory);
    await luo.close();
  },
};
