import {
  KernelError,
  eventfdFromFile,
  type EventFd,
  type File,
  type KernelLog,
  type PciDevice,
  type Vfs,
} from '@liveupdate/kernel';
import {
  PCI_COMMAND,
  PCI_COMMAND_MEMORY,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
} from '@liveupdate/machine';
import { iommufdDeviceBind, type IommufdBoundDevice } from '@liveupdate/plugin-iommufd';

/** The directory of vfio device cdevs. */
export const VFIO_DEVICES_DIR = '/dev/vfio/devices';

/** What a vfio-pci device needs of the kernel. */
export interface VfioKernel {
  readonly vfs: Vfs;
  readonly log: KernelLog;
}

/**
 * One PCI function driven by vfio-pci (`struct vfio_pci_core_device`), reachable through its cdev
 * `/dev/vfio/devices/vfioN`. The device is *opened* (`open_device`) by the first open of its cdev,
 * which resets it and enables memory decode, as `vfio_pci_core_enable()` does; a single file at a
 * time may bind it to an iommufd and drive it. When that file is released, interrupts are
 * disabled, the device stops mastering the bus and is reset, and only then is it detached from its
 * IOMMU page table and unbound, so no DMA of its can fault or land anywhere afterwards.
 */
export class VfioPciDevice {
  /** `N` of `vfioN`. */
  readonly minor: number;
  /** `/dev/vfio/devices/vfioN`. */
  readonly path: string;
  readonly pci: PciDevice;
  readonly #kernel: VfioKernel;
  #openFiles = 0;
  #owner: File | undefined;
  #binding: IommufdBoundDevice | undefined;
  /**
   * After a live update, the iommufd file the previous kernel's binding is preserved in (the
   * session's file for the token in `vfio_pci_core_device_ser`): the retrieved cdev binds only to
   * it, where the restored HWPT is. Cleared when the session finishes.
   */
  #incomingIommufd: File | undefined;
  /** The MSI-X vector's trigger (`VFIO_PCI_NUM_IRQS` vectors: one here), when MSI-X is on. */
  #msix: { trigger: { file: File; eventfd: EventFd } | undefined } | undefined;

  constructor(minor: number, pci: PciDevice, kernel: VfioKernel) {
    this.minor = minor;
    this.path = `${VFIO_DEVICES_DIR}/vfio${minor}`;
    this.pci = pci;
    this.#kernel = kernel;
  }

  /** Whether interrupts are enabled (`irq_type != VFIO_PCI_NUM_IRQS`). */
  get interruptsEnabled(): boolean {
    return this.#msix !== undefined;
  }

  /** The iommufd binding, while a file has bound the device. */
  get binding(): IommufdBoundDevice | undefined {
    return this.#binding;
  }

  /** Whether `file` bound this device (vfio's `access_granted`). */
  isBoundBy(file: File): boolean {
    return this.#owner === file;
  }

  /**
   * A cdev file was opened: the first open resets the function and enables memory decode.
   * `EBUSY` while the device is claimed by a live-update session of the previous kernel
   * ({@link PciDevice.incoming}): only that session's `RETRIEVE_FD` opens it
   * ({@link openRetrieved}) until the session finishes.
   */
  open(): void {
    if (this.pci.incoming) {
      throw new KernelError(
        'EBUSY',
        `vfio ${this.pci.name}: preserved by the previous kernel; retrieve it from its live-update session`,
      );
    }
    if (this.#openFiles++ === 0) this.#enable();
  }

  /**
   * `vfio_device_liveupdate_cdev_open()`: the open of the cdev file a live-update `retrieve`
   * returns. The device is still doing DMA for the guest, so nothing is reset and its
   * configuration (memory decode, bus mastering) stays as the previous kernel left it; like any
   * open, the file must `VFIO_DEVICE_BIND_IOMMUFD`, and only to `iommufd`, the file the previous
   * binding was preserved in (`EINVAL` otherwise).
   */
  openRetrieved(iommufd: File): void {
    this.#openFiles++;
    this.#incomingIommufd = iommufd;
  }

  /** The session finished: the device is an ordinary one again (and so is its binding). */
  finishIncoming(): void {
    this.#incomingIommufd = undefined;
  }

  /**
   * `VFIO_DEVICE_BIND_IOMMUFD` by `file`: `EINVAL` when the device is already bound (by this file
   * or another: a cdev device is never shared) or, retrieved after a live update, to an iommufd
   * other than the one retrieved with it; `EBADFD`/`EBUSY` from iommufd.
   */
  bind(file: File, iommufd: File): number {
    if (this.#owner) {
      throw new KernelError(
        'EINVAL',
        `vfio ${this.pci.name}: already bound to an iommufd${this.#owner === file ? '' : ' by another open file'}`,
      );
    }
    if (this.#incomingIommufd && this.#incomingIommufd !== iommufd) {
      throw new KernelError(
        'EINVAL',
        `vfio ${this.pci.name}: a retrieved device binds to the iommufd retrieved with it, where its translation is`,
      );
    }
    this.#binding = iommufdDeviceBind(iommufd, this.pci);
    this.#owner = file;
    return this.#binding.devId;
  }

  /**
   * `vfio_pci_core_ioctl_reset` (`pci_try_reset_function`): save the command register and MSI-X
   * control, reset the function, restore them. The device loses its internal state (rings,
   * registers), not its configuration.
   */
  reset(): void {
    const command = this.pci.readConfig16(PCI_COMMAND);
    const msix = this.pci.readConfig16(PCI_MSIX_FLAGS);
    this.pci.reset();
    this.pci.writeConfig16(PCI_COMMAND, command);
    this.pci.writeConfig16(PCI_MSIX_FLAGS, msix);
  }

  /**
   * MSI-X vector 0 signals `eventfdFile` (an eventfd; `EINVAL` otherwise), enabling MSI-X on the
   * device first if needed (`vfio_msi_enable` + `vfio_msi_set_vector_signal`); `null` unassigns the
   * vector's trigger and leaves MSI-X enabled, as upstream.
   */
  setMsixTrigger(eventfdFile: File | null): void {
    const eventfd = eventfdFile ? eventfdFromFile(eventfdFile) : undefined;
    if (!this.#msix) {
      this.#msix = { trigger: undefined };
      this.pci.writeConfig16(PCI_MSIX_FLAGS, PCI_MSIX_FLAGS_ENABLE);
      this.pci.requestIrq((count) => this.#msix?.trigger?.eventfd.signal(count));
    }
    const old = this.#msix.trigger;
    this.#msix.trigger =
      eventfdFile && eventfd ? { file: this.#kernel.vfs.fget(eventfdFile), eventfd } : undefined;
    if (old) void this.#kernel.vfs.fput(old.file);
  }

  /** Signal the MSI-X trigger from software (`DATA_NONE` / `DATA_BOOL` with `ACTION_TRIGGER`). */
  triggerMsix(): void {
    this.#msix?.trigger?.eventfd.signal(1);
  }

  /** `vfio_msi_disable`: free the irq, drop the trigger, turn MSI-X off. */
  disableInterrupts(): void {
    const msix = this.#msix;
    if (!msix) return;
    this.#msix = undefined;
    this.pci.freeIrq();
    this.pci.writeConfig16(PCI_MSIX_FLAGS, 0);
    if (msix.trigger) void this.#kernel.vfs.fput(msix.trigger.file);
  }

  /**
   * A cdev file is released. The binding file's release closes the device (`close_device`):
   * interrupts off, bus mastering off, function reset, then detach and unbind from the iommufd.
   */
  async release(file: File): Promise<void> {
    this.#openFiles--;
    if (this.#owner !== file) return;
    this.disableInterrupts();
    this.pci.setMaster(false);
    this.pci.reset();
    const binding = this.#binding!;
    this.#owner = undefined;
    this.#binding = undefined;
    await binding.unbind();
    this.#kernel.log.info(`vfio-pci ${this.pci.name}: closed, reset and unbound`);
  }

  /** `vfio_pci_core_enable`: reset to a clean state, memory decode on, bus mastering off. */
  #enable(): void {
    this.pci.reset();
    this.pci.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY);
    this.pci.writeConfig16(PCI_MSIX_FLAGS, 0);
    this.#kernel.log.info(`vfio-pci ${this.pci.name}: opened, function reset`);
  }
}
