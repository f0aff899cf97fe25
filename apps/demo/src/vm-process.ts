import { LiveUpdateDevice } from '@liveupdate/core';
import { SEEK_END, type Machine, type Process } from '@liveupdate/machine';
import { IommufdDevice } from '@liveupdate/plugin-iommufd';
import { VFIO_DEVICES_DIR, VfioDevice } from '@liveupdate/plugin-vfio';
import { GuestNic } from './vm-guest-nic.js';
import { GuestRam } from './vm-guest-ram.js';

/** Name of the LUO session the VMM hands its VM over in. */
export const VM_SESSION = 'vm0';
/** Tokens of the VM's files in that session, in preservation order. */
export const VM_TOKENS = { guestRam: 1, iommufd: 2, nic: 3 } as const;
/** The HWPT's live-update token inside the iommufd (`IOMMU_HWPT_LU_SET_PRESERVE`). */
export const VM_HWPT_TOKEN = 1;
/** The passthrough NIC: the first PCI function, so vfio-pci's first cdev. */
export const NIC_BDF = '00:03.0';
export const NIC_CDEV = `${VFIO_DEVICES_DIR}/vfio0`;

/** The shape of one VM: guest RAM and the NIC's receive ring in it. */
export interface VmLayout {
  readonly guestBytes: number;
  readonly ringSize: number;
}

/** Milliseconds of the new VMM's steps after a live update, in the order they run. */
export interface VmRestoreTimings {
  /** Open `/dev/liveupdate`, `RETRIEVE_SESSION`, close the device (the session fd stays). */
  readonly 'retrieve-session': number;
  /** `RETRIEVE_FD` of the NIC's cdev, guest RAM and the iommufd, in that order. */
  readonly 'retrieve-fds': number;
  /** `IOMMU_HWPT_LU_RESTORE`: a HWPT wrapping the domain the device still translates through. */
  readonly 'hwpt-restore': number;
  /** `VFIO_DEVICE_BIND_IOMMUFD` of the retrieved cdev to the retrieved iommufd. */
  readonly bind: number;
  /**
   * A new IOAS, `IOMMU_IOAS_MAP_FILE` of guest RAM, a HWPT on it, then the hitless attach of the
   * NIC to that HWPT.
   */
  readonly 'new-ioas': number;
  /** `IOMMU_DESTROY` of the restored HWPT, then `SESSION_FINISH`. */
  readonly finish: number;
  /** `mmap` of guest RAM and the guest driver's first poll of its ring. */
  readonly resume: number;
}

/**
 * The VMM: a process holding a VM's guest RAM (a sealed memfd), an iommufd with one IOAS mapping
 * guest RAM at IOVA 0, and a passthrough NIC bound to it whose receive ring lives in guest RAM.
 * The VM's "guest" is {@link GuestNic}'s loop, run in this process. Across a live update the VMM
 * preserves the three files in session {@link VM_SESSION}; the next kernel's VMM retrieves them
 * and the NIC never stops.
 */
export class VmmProcess {
  readonly process: Process;
  readonly ram: GuestRam;
  readonly iommufd: IommufdDevice;
  readonly nic: VfioDevice;
  readonly guest: GuestNic;
  /** The IOAS guest RAM is mapped in, and the HWPT (IOMMU domain) the NIC is attached to. */
  readonly ioas: number;
  readonly hwpt: number;

  private constructor(fields: {
    process: Process;
    ram: GuestRam;
    iommufd: IommufdDevice;
    nic: VfioDevice;
    guest: GuestNic;
    ioas: number;
    hwpt: number;
  }) {
    this.process = fields.process;
    this.ram = fields.ram;
    this.iommufd = fields.iommufd;
    this.nic = fields.nic;
    this.guest = fields.guest;
    this.ioas = fields.ioas;
    this.hwpt = fields.hwpt;
  }

  /**
   * Start a VMM and its VM: guest RAM, iommufd, IOAS, `IOMMU_IOAS_MAP_FILE`, the NIC bound and
   * attached to its own HWPT, which is marked for preservation; then the guest boots its driver
   * and its loop runs.
   */
  static async create(machine: Machine, layout: VmLayout): Promise<VmmProcess> {
    const process = machine.spawn();
    const ram = await GuestRam.create(process, layout.guestBytes);
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    await iommufd.mapFile(ioas, { fd: ram.fd, length: ram.size, iova: 0 });
    const nic = await VfioDevice.open(process, NIC_CDEV);
    const devId = await nic.bindIommufd(iommufd.fd);
    const hwpt = await iommufd.hwptAlloc(devId, ioas);
    await nic.attach(hwpt);
    await iommufd.hwptLuSetPreserve(hwpt, VM_HWPT_TOKEN);
    const guest = await GuestNic.boot(nic, ram, layout.ringSize);
    guest.run();
    return new VmmProcess({ process, ram, iommufd, nic, guest, ioas, hwpt });
  }

  /**
   * Hand the VM to the next kernel, the heavy step, while the guest runs: open `/dev/liveupdate`,
   * create {@link VM_SESSION}, `PRESERVE_FD` guest RAM, then the iommufd, then the NIC's cdev,
   * and close the device (the session fd stays open until the process ends at the kexec).
   * Interrupts are already off: the guest polls. Returns the milliseconds it took.
   */
  async preserve(): Promise<number> {
    const start = performance.now();
    const device = await LiveUpdateDevice.open(this.process);
    const session = await device.createSession(VM_SESSION);
    await device.close();
    await session.preserveFd(this.ram.fd, VM_TOKENS.guestRam);
    await session.preserveFd(this.iommufd.fd, VM_TOKENS.iommufd);
    await session.preserveFd(this.nic.fd, VM_TOKENS.nic);
    await this.nic.disableInterrupts();
    return performance.now() - start;
  }

  /**
   * The next kernel's VMM takes the VM back, as issue 5 walks it: retrieve the session and its
   * files (device first, to show the order does not matter), restore the HWPT, bind the NIC to
   * the retrieved iommufd, map guest RAM into a new IOAS and move the NIC onto it without
   * stopping it, destroy the restored HWPT, finish; then map guest RAM and resume the guest.
   * `resumedAt` is the machine time of the guest's first poll. Last, the new HWPT is marked for
   * preservation, so the VM is ready for the next update.
   */
  static async retrieve(
    machine: Machine,
  ): Promise<{ vmm: VmmProcess; timings: VmRestoreTimings; resumedAt: number }> {
    const process = machine.spawn();
    const lap = stopwatch();
    const device = await LiveUpdateDevice.open(process);
    const session = await device.retrieveSession(VM_SESSION);
    await device.close();
    const retrieveSession = lap();
    const nic = VfioDevice.fromFd(process, await session.retrieveFd(VM_TOKENS.nic));
    const ramFd = await session.retrieveFd(VM_TOKENS.guestRam);
    const iommufd = IommufdDevice.fromFd(process, await session.retrieveFd(VM_TOKENS.iommufd));
    const retrieveFds = lap();
    const restored = await iommufd.hwptLuRestore(VM_HWPT_TOKEN);
    const hwptRestore = lap();
    const devId = await nic.bindIommufd(iommufd.fd);
    const bind = lap();
    const ioas = await iommufd.allocIoas();
    const size = await process.lseek(ramFd, 0, SEEK_END);
    await iommufd.mapFile(ioas, { fd: ramFd, length: size, iova: 0 });
    const hwpt = await iommufd.hwptAlloc(devId, ioas);
    await nic.attach(hwpt);
    const newIoas = lap();
    await iommufd.destroy(restored);
    await session.finish();
    const finish = lap();
    const ram = await GuestRam.attach(process, ramFd);
    const guest = await GuestNic.resume(nic, ram);
    await guest.service();
    const resume = lap();
    const resumedAt = machine.now();
    guest.run();
    await session.close();
    // Ready for the next update, after the blackout: the new HWPT is the one to hand over.
    await iommufd.hwptLuSetPreserve(hwpt, VM_HWPT_TOKEN);
    return {
      vmm: new VmmProcess({ process, ram, iommufd, nic, guest, ioas, hwpt }),
      timings: {
        'retrieve-session': retrieveSession,
        'retrieve-fds': retrieveFds,
        'hwpt-restore': hwptRestore,
        bind,
        'new-ioas': newIoas,
        finish,
        resume,
      },
      resumedAt,
    };
  }
}

/** Milliseconds since the previous call (or since it was made). */
function stopwatch(): () => number {
  let last = performance.now();
  return () => {
    const now = performance.now();
    const lap = now - last;
    last = now;
    return lap;
  };
}
