import { AgentClient } from '@liveupdate/agent';
import { type Machine, type Process } from '@liveupdate/machine';
import { IommufdDevice } from '@liveupdate/plugin-iommufd';
import { VFIO_DEVICES_DIR, VfioDevice } from '@liveupdate/plugin-vfio';
import { helloRestored, startServiceProcess } from './agent-hello.js';
import { GuestNic } from './vm-guest-nic.js';
import { GuestRam } from './vm-guest-ram.js';

/**
 * The VMM's service name with the agent, which is also the name of the LUO session the agent
 * keeps the VM's files in.
 */
export const VM_SESSION = 'vm0';
/**
 * What the VMM stores with the agent: one entry per file, each with the `order` the next kernel's
 * agent retrieves it in. Each file depends on the one before: the iommufd's preserved HWPT maps
 * guest RAM, the NIC is bound to the iommufd. The agent preserves them in this order too (LUO
 * wants a file's dependencies preserved before it), as tokens 1, 2, 3 of the session.
 */
export const VM_ENTRIES = {
  guestRam: { name: 'guest-ram', order: 0 },
  iommufd: { name: 'iommufd', order: 1 },
  nic: { name: 'nic', order: 2 },
} as const;
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

/**
 * Milliseconds of the new VMM's steps after a live update. The guest resumes as soon as guest RAM
 * is mapped and the NIC bound: {@link VM_BLACKOUT_PHASES} run in that order inside the VM's
 * blackout; {@link VM_AFTER_RESUME_PHASES} follow while the guest runs, the NIC translating
 * through the restored domain until the hitless swap onto the new IOAS.
 */
export interface VmRestoreTimings {
  /**
   * Connect to the host's agent and say `hello`; before it answers, the agent retrieves guest
   * RAM, the iommufd and the NIC's cdev (`RETRIEVE_FD`) in their order.
   */
  readonly hello: number;
  /** `fetch` of the three, over the socket (`SCM_RIGHTS`), the session left unfinished. */
  readonly fetch: number;
  /** `IOMMU_HWPT_LU_RESTORE`: a HWPT wrapping the domain the device still translates through. */
  readonly 'hwpt-restore': number;
  /** `VFIO_DEVICE_BIND_IOMMUFD` of the retrieved cdev to the retrieved iommufd. */
  readonly bind: number;
  /** `mmap` of guest RAM and the guest driver's first poll of its ring: the blackout ends. */
  readonly resume: number;
  /**
   * After the resume: a new IOAS, `IOMMU_IOAS_MAP_FILE` of guest RAM, a HWPT on it, then the
   * hitless attach of the NIC to that HWPT.
   */
  readonly 'new-ioas': number;
  /** After the resume: `IOMMU_DESTROY` of the restored HWPT, then the agent's `finish` (its `SESSION_FINISH`). */
  readonly finish: number;
}

/** The steps of {@link VmRestoreTimings} inside the VM's blackout, in the order they run. */
export const VM_BLACKOUT_PHASES = [
  'hello',
  'fetch',
  'hwpt-restore',
  'bind',
  'resume',
] as const satisfies readonly (keyof VmRestoreTimings)[];

/** The steps of {@link VmRestoreTimings} after the guest resumed, in the order they run. */
export const VM_AFTER_RESUME_PHASES = [
  'new-ioas',
  'finish',
] as const satisfies readonly (keyof VmRestoreTimings)[];

/**
 * The VMM: a process holding a VM's guest RAM (a sealed memfd), an iommufd with one IOAS mapping
 * guest RAM at IOVA 0, and a passthrough NIC bound to it whose receive ring lives in guest RAM.
 * The VM's "guest" is {@link GuestNic}'s loop, run in this process. It never opens
 * `/dev/liveupdate`: across a live update it hands the three files to the host's agent, which
 * keeps them in session {@link VM_SESSION}; the next kernel's VMM fetches them from the next
 * agent and the NIC never stops.
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
   * Hand the VM to the host's agent, the heavy step, while the guest runs: `store` guest RAM, the
   * iommufd and the NIC's cdev, one entry each with its order ({@link VM_ENTRIES}; the agent
   * preserves each in session {@link VM_SESSION}); then turn the NIC's interrupts off, which
   * LUO's freeze requires (the guest polls). Returns the milliseconds it took.
   */
  async preserve(): Promise<number> {
    const start = performance.now();
    const client = await AgentClient.connect(this.process);
    try {
      await client.hello(VM_SESSION);
      for (const [key, fd] of [
        ['guestRam', this.ram.fd],
        ['iommufd', this.iommufd.fd],
        ['nic', this.nic.fd],
      ] as const) {
        const { name, order } = VM_ENTRIES[key];
        await client.store(name, [fd], { order });
      }
    } finally {
      await client.bye();
    }
    await this.nic.disableInterrupts();
    return performance.now() - start;
  }

  /**
   * The next kernel's VMM takes the VM back from the host's agent, once it has restored, as
   * issue 5 walks it, with only what the guest needs inside the blackout: `hello` (the agent
   * retrieves the files in order), fetch them, restore the HWPT, bind the NIC to the retrieved
   * iommufd, map guest RAM and resume the guest — the NIC still translates through the restored
   * domain. `resumedAt` is the machine time of the guest's first poll. Then, while the guest
   * runs: map guest RAM into a new IOAS and move the NIC onto it without stopping it, destroy the
   * restored HWPT, and only then have the agent finish the session (LUO refuses before: `EBUSY`).
   * Last, the new HWPT is marked for preservation, so the VM is ready for the next update.
   */
  static async retrieve(
    machine: Machine,
  ): Promise<{ vmm: VmmProcess; timings: VmRestoreTimings; resumedAt: number }> {
    return startServiceProcess(machine, async (process) => {
      const lap = stopwatch();
      const client = await AgentClient.connect(process);
      // The three fetches go out behind the hello, pipelined. The session must outlive them: LUO
      // finishes it only once the NIC is bound and off the restored HWPT.
      const fetchOne = async (entry: { name: string }): Promise<number> =>
        (await client.fetch(entry.name, { finish: false }))[0]!;
      const { fetched } = await helloRestored(client, VM_SESSION, () =>
        Promise.all([
          fetchOne(VM_ENTRIES.guestRam),
          fetchOne(VM_ENTRIES.iommufd),
          fetchOne(VM_ENTRIES.nic),
        ]),
      );
      const hello = lap();
      const [ramFd, iommuFd, nicFd] = await fetched;
      const iommufd = IommufdDevice.fromFd(process, iommuFd);
      const nic = VfioDevice.fromFd(process, nicFd);
      const fetch = lap();
      const restored = await iommufd.hwptLuRestore(VM_HWPT_TOKEN);
      const hwptRestore = lap();
      const devId = await nic.bindIommufd(iommufd.fd);
      const bind = lap();
      const ram = await GuestRam.attach(process, ramFd);
      const guest = await GuestNic.resume(nic, ram);
      await guest.service();
      const resume = lap();
      const resumedAt = machine.now();
      guest.run();
      // The guest runs; the NIC keeps translating through the restored domain meanwhile.
      const ioas = await iommufd.allocIoas();
      await iommufd.mapFile(ioas, { fd: ramFd, length: ram.size, iova: 0 });
      const hwpt = await iommufd.hwptAlloc(devId, ioas);
      await nic.attach(hwpt);
      const newIoas = lap();
      await iommufd.destroy(restored);
      await client.finish();
      const finish = lap();
      await client.bye();
      // Ready for the next update: the new HWPT is the one to hand over.
      await iommufd.hwptLuSetPreserve(hwpt, VM_HWPT_TOKEN);
      return {
        vmm: new VmmProcess({ process, ram, iommufd, nic, guest, ioas, hwpt }),
        timings: {
          hello,
          fetch,
          'hwpt-restore': hwptRestore,
          bind,
          resume,
          'new-ioas': newIoas,
          finish,
        },
        resumedAt,
      };
    });
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
