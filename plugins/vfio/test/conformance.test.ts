// vfio-pci-v1 against the testkit's conformance laws, with the files a VMM preserves with a
// passthrough device: guest RAM (a sealed memfd), an iommufd whose IOAS maps it through a HWPT
// marked for preservation, and the device's cdev bound and attached to that HWPT — in that order,
// as vfio-pci-v1's preserve requires. The laws make up to three such sessions at once, so every
// machine has three NICs and each session takes the first one no other file has bound.
//
// Five laws cannot hold by design, and are declared as exceptions below: the suite runs them and
// reports them skipped with the reason while they fail (and fails them if they ever hold).
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_ADD_SEALS,
  KernelError,
  MFD_ALLOW_SEALING,
  NIC_REG_RX_BASE_LO,
  NIC_REG_RX_SIZE,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  type Process,
} from '@liveupdate/machine';
import { IommufdDevice } from '@liveupdate/plugin-iommufd';
import { describeConformance } from '@liveupdate/testkit';
import { VfioDevice } from '../src/index.js';
import { KiB } from './vmm.js';

const NICS = ['00:03.0', '00:04.0', '00:05.0'];
/** vfio-pci numbers its cdevs in bus order. */
const CDEVS = NICS.map((_, i) => `/dev/vfio/devices/vfio${i}`);
const RAM_BYTES = 64 * KiB;
/** The token of the HWPT each session's iommufd marks for preservation. */
const HWPT_TOKEN = 1;
/** A mark each session writes into its guest RAM, to be found there after the update. */
const GUEST_MARK = new TextEncoder().encode('guest RAM survives');

/**
 * The device's object id in each iommufd a process bound a device to, by iommufd fd: a retrieved
 * device is bound on first use (by `readContent` or `prepareFinish`), once.
 */
const devIds = new WeakMap<Process, Map<number, number>>();

/**
 * A different receive-ring address for every session made: read back through a retrieved file,
 * it shows the file drives the very device that was preserved, its registers untouched (no reset).
 */
let nextRingGpa = 0x1000;

/** Bind `vfio` to `iommufd` unless this process did already; the device's id in the iommufd. */
async function boundDevId(process: Process, vfio: VfioDevice, iommufdFd: number): Promise<number> {
  const ids = devIds.get(process) ?? new Map<number, number>();
  devIds.set(process, ids);
  let id = ids.get(iommufdFd);
  if (id === undefined) {
    id = await vfio.bindIommufd(iommufdFd);
    ids.set(iommufdFd, id);
  }
  return id;
}

/** The first NIC no other file has bound, bound to `iommufd`: EINVAL says it is taken. */
async function freeNic(
  process: Process,
  iommufd: IommufdDevice,
): Promise<{ vfio: VfioDevice; devId: number }> {
  for (const cdev of CDEVS) {
    const vfio = await VfioDevice.open(process, cdev);
    try {
      return { vfio, devId: await boundDevId(process, vfio, iommufd.fd) };
    } catch (error) {
      await vfio.close();
      if (!(KernelError.isInstance(error) && error.code === 'EINVAL')) throw error;
    }
  }
  throw new Error(`all ${CDEVS.length} NICs are bound already; give the machine more`);
}

/** An IOAS mapping guest RAM at IOVA 0, a HWPT on it for `devId`, marked for preservation. */
async function markedHwpt(iommufd: IommufdDevice, ramFd: number, devId: number): Promise<number> {
  const ioas = await iommufd.allocIoas();
  await iommufd.mapFile(ioas, { fd: ramFd, length: RAM_BYTES, iova: 0 });
  const hwpt = await iommufd.hwptAlloc(devId, ioas);
  await iommufd.hwptLuSetPreserve(hwpt, HWPT_TOKEN);
  return hwpt;
}

/**
 * The IOMMU driver allocates a bus's context table at the first attach there and keeps it for the
 * life of the kernel, as VT-d does (see warmUpIommu in helpers.ts); the law's baseline is taken
 * before the first file, so that frame shows as held.
 */
const FIRST_ATTACH =
  "the IOMMU driver allocates the bus's context table at the first attach and keeps it for the life of the kernel (as VT-d does), so the first device file leaves one frame allocated";

describeConformance({
  name: 'vfio-pci-v1 conformance',
  handlerCompatible: 'vfio-pci-v1',
  modules: ['@liveupdate/plugin-memfd', '@liveupdate/plugin-iommufd', '@liveupdate/plugin-vfio'],
  moduleBase: import.meta.url,
  devices: NICS.map((bdf) => ({ kind: 'nic', bdf })),
  async createSession(process) {
    const ram = await process.memfdCreate('guest-ram', MFD_ALLOW_SEALING);
    await process.ftruncate(ram, RAM_BYTES);
    await process.pwrite(ram, GUEST_MARK, 0);
    // Sealed before it is mapped: iommufd-v1 preserves only such guest RAM.
    await process.fcntl(ram, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
    const iommufd = await IommufdDevice.open(process);
    const { vfio, devId } = await freeNic(process, iommufd);
    await vfio.attach(await markedHwpt(iommufd, ram, devId));
    // Programmed, never enabled: the NIC does no DMA, so what the laws read stays put.
    await vfio.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    await vfio.writeRegister(NIC_REG_RX_BASE_LO, nextRingGpa);
    await vfio.writeRegister(NIC_REG_RX_SIZE, 16);
    nextRingGpa += 0x1000;
    return {
      files: [
        { name: 'guest RAM', fd: ram },
        { name: 'iommufd', fd: iommufd.fd },
        { name: 'vfio', fd: vfio.fd },
      ],
      fileUnderTest: 'vfio',
    };
  },
  /**
   * What must survive: the device's configuration (memory decode and bus mastering stay on: it is
   * not reset across the kexec) and its receive-ring registers (the same device, untouched), and
   * guest RAM. A retrieved device is bound to its retrieved iommufd first, as a VMM does.
   */
  async readContent(process, fd, files) {
    const vfio = VfioDevice.fromFd(process, fd);
    await boundDevId(process, vfio, await files.fd('iommufd'));
    return {
      command: await vfio.readConfig16(PCI_COMMAND),
      rxBase: await vfio.readRegister(NIC_REG_RX_BASE_LO),
      rxSize: await vfio.readRegister(NIC_REG_RX_SIZE),
      guest: await process.pread(await files.fd('guest RAM'), GUEST_MARK.length, 0),
    };
  },
  /**
   * What a VMM does before FINISH (see restoreVm in vmm.ts): reclaim the preserved HWPT, bind the
   * device to the retrieved iommufd, map the retrieved guest RAM into a new IOAS and HWPT, move
   * the device there (a hitless replace), destroy the restored HWPT. The new HWPT is marked, so
   * that the session can be preserved again (the three-updates law).
   */
  async prepareFinish(process, fd, files) {
    const iommufd = IommufdDevice.fromFd(process, await files.fd('iommufd'));
    const restored = await iommufd.hwptLuRestore(HWPT_TOKEN);
    const vfio = VfioDevice.fromFd(process, fd);
    const devId = await boundDevId(process, vfio, iommufd.fd);
    await vfio.attach(await markedHwpt(iommufd, await files.fd('guest RAM'), devId));
    await iommufd.destroy(restored);
  },
  exceptions: {
    'preserve-unpreserve': FIRST_ATTACH,
    'finish-unretrieved':
      'canFinish of vfio-pci-v1 and of the iommufd it depends on require their files to be retrieved (as upstream: the device is doing DMA into guest RAM, and only the VMM that retrieves it, rebinds it and reclaims its HWPT can take it over), so FINISH of never-retrieved ones is EBUSY',
    'void-ops':
      'its FINISH leaves token 2 (a device, its iommufd, its guest RAM) unretrieved, and canFinish of an unretrieved device or iommufd is false (as upstream), so that FINISH is EBUSY',
  },
});
