// A small VMM for the tests: guest RAM in a sealed memfd mapped 1:1 (IOVA = guest-physical
// address) into an IOAS, passthrough devices bound to the iommufd, and the guest-side drivers of
// the NIC and the copy engine programmed through vfio's BAR0 region.
import {
  DMA_COPY_COMPLETION_SIZE,
  DMA_COPY_CTRL_ENABLE,
  DMA_COPY_DESC_SIZE,
  DMA_COPY_REG_BASE_HI,
  DMA_COPY_REG_BASE_LO,
  DMA_COPY_REG_COMPLETED,
  DMA_COPY_REG_CTRL,
  DMA_COPY_REG_HEAD,
  DMA_COPY_REG_SIZE,
  DMA_COPY_REG_TAIL,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  NIC_CTRL_RX_ENABLE,
  NIC_CTRL_RX_IRQ,
  NIC_DESC_DONE,
  NIC_DESC_SIZE,
  NIC_PACKET_SIZE,
  NIC_REG_CTRL,
  NIC_REG_RX_BASE_HI,
  NIC_REG_RX_BASE_LO,
  NIC_REG_RX_HEAD,
  NIC_REG_RX_SIZE,
  NIC_REG_RX_TAIL,
  NIC_REG_STATUS,
  NIC_STATUS_RX_ACTIVE,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  nicPacketChecksum,
  type Process,
} from '@liveupdate/machine';
import { LiveUpdateDevice, type LiveUpdateSession } from '@liveupdate/core';
import { IommufdDevice } from '@liveupdate/plugin-iommufd';
import { MappedMemfd } from '@liveupdate/plugin-memfd';
import { until } from '@liveupdate/vitest-config/wait-until';
import { VfioDevice } from '../src/index.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;

/** Guest RAM: a memfd sealed against growing and shrinking before it is mapped, and its mapping. */
export type GuestRam = MappedMemfd;

export const GuestRam = {
  create(process: Process, size: number): Promise<GuestRam> {
    return MappedMemfd.create(process, 'guest-ram', size, {
      seals: F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL,
    });
  },
  /** Guest RAM in a memfd the process already has (e.g. retrieved after a live update). */
  fromFd(process: Process, fd: number): Promise<GuestRam> {
    return MappedMemfd.map(process, fd);
  },
};

/** One received packet as the guest sees it in its ring. */
export interface ReceivedPacket {
  readonly sequence: number;
  readonly length: number;
  readonly checksumOk: boolean;
}

/** The guest's NIC driver: a receive ring in guest RAM, programmed through vfio. */
export class GuestNic {
  readonly device: VfioDevice;
  readonly ram: GuestRam;
  readonly ringGpa: number;
  readonly buffersGpa: number;
  readonly ringSize: number;

  constructor(
    device: VfioDevice,
    ram: GuestRam,
    layout: { ringGpa: number; buffersGpa: number; ringSize: number },
  ) {
    this.device = device;
    this.ram = ram;
    this.ringGpa = layout.ringGpa;
    this.buffersGpa = layout.buffersGpa;
    this.ringSize = layout.ringSize;
  }

  bufferGpa(i: number): number {
    return this.buffersGpa + i * NIC_PACKET_SIZE;
  }

  /** Write the descriptors, program the ring, turn on memory decode, bus mastering and receive. */
  async start(options: { interrupts?: boolean } = {}): Promise<void> {
    const desc = new Uint8Array(NIC_DESC_SIZE);
    const view = new DataView(desc.buffer);
    for (let i = 0; i < this.ringSize; i++) {
      view.setBigUint64(0, BigInt(this.bufferGpa(i)), true);
      view.setUint16(8, NIC_PACKET_SIZE, true);
      this.ram.write(this.ringGpa + i * NIC_DESC_SIZE, desc);
    }
    const { device } = this;
    await device.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    await device.writeRegister(NIC_REG_RX_BASE_LO, this.ringGpa);
    await device.writeRegister(NIC_REG_RX_BASE_HI, 0);
    await device.writeRegister(NIC_REG_RX_SIZE, this.ringSize);
    await device.writeRegister(NIC_REG_RX_HEAD, 0);
    await device.writeRegister(NIC_REG_RX_TAIL, 0);
    await device.writeRegister(
      NIC_REG_CTRL,
      NIC_CTRL_RX_ENABLE | (options.interrupts ? NIC_CTRL_RX_IRQ : 0),
    );
  }

  /**
   * Stop receiving, as a driver must: clear CTRL, then wait for the NIC to say it saw the stop
   * (`NIC_STATUS_RX_ACTIVE` clear). Only then is no packet still on its way into the ring.
   */
  async stop(): Promise<void> {
    await this.device.writeRegister(NIC_REG_CTRL, 0);
    await until(
      async () => ((await this.device.readRegister(NIC_REG_STATUS)) & NIC_STATUS_RX_ACTIVE) === 0,
      'the NIC to see receive stopped',
    );
  }

  async head(): Promise<number> {
    return this.device.readRegister(NIC_REG_RX_HEAD);
  }

  /** The packets in descriptors `[0, count)`, read from guest RAM. */
  packets(count: number): ReceivedPacket[] {
    return Array.from({ length: count }, (_, i) => {
      const desc = this.ram.view(this.ringGpa + i * NIC_DESC_SIZE, NIC_DESC_SIZE);
      if ((desc.getUint32(12, true) & NIC_DESC_DONE) === 0) {
        return { sequence: -1, length: 0, checksumOk: false };
      }
      const packet = this.ram.read(this.bufferGpa(i), NIC_PACKET_SIZE);
      const view = new DataView(packet.buffer);
      return {
        sequence: Number(view.getBigUint64(0, true)),
        length: desc.getUint16(10, true),
        checksumOk: view.getUint32(12, true) === nicPacketChecksum(packet),
      };
    });
  }
}

/** The guest's copy-engine driver: a descriptor ring and completion records in guest RAM. */
export class GuestCopyEngine {
  readonly device: VfioDevice;
  readonly ram: GuestRam;
  readonly ringGpa: number;
  readonly completionsGpa: number;
  readonly ringSize: number;
  #tail: number;

  /** `layout.tail`: descriptors already queued, for a driver taking over a running engine. */
  constructor(
    device: VfioDevice,
    ram: GuestRam,
    layout: { ringGpa: number; completionsGpa: number; ringSize: number; tail?: number },
  ) {
    this.device = device;
    this.ram = ram;
    this.ringGpa = layout.ringGpa;
    this.completionsGpa = layout.completionsGpa;
    this.ringSize = layout.ringSize;
    this.#tail = layout.tail ?? 0;
  }

  /** Descriptors queued so far. */
  get tail(): number {
    return this.#tail;
  }

  async start(): Promise<void> {
    const { device } = this;
    await device.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    await device.writeRegister(DMA_COPY_REG_BASE_LO, this.ringGpa);
    await device.writeRegister(DMA_COPY_REG_BASE_HI, 0);
    await device.writeRegister(DMA_COPY_REG_SIZE, this.ringSize);
    await device.writeRegister(DMA_COPY_REG_HEAD, 0);
    await device.writeRegister(DMA_COPY_REG_TAIL, 0);
    await device.writeRegister(DMA_COPY_REG_CTRL, DMA_COPY_CTRL_ENABLE);
  }

  /** Queue one copy of `length` bytes from IOVA `src` to IOVA `dst`; its descriptor index. */
  async copy(src: number, dst: number, length: number): Promise<number> {
    const [index] = await this.queue([{ src, dst, length }]);
    return index!;
  }

  /**
   * Queue several copies with one doorbell (fewer than `ringSize` pending at a time); their
   * descriptor indexes.
   */
  async queue(copies: readonly { src: number; dst: number; length: number }[]): Promise<number[]> {
    const desc = new Uint8Array(DMA_COPY_DESC_SIZE);
    const view = new DataView(desc.buffer);
    const indexes = copies.map(({ src, dst, length }) => {
      const index = this.#tail % this.ringSize;
      view.setBigUint64(0, BigInt(src), true);
      view.setBigUint64(8, BigInt(dst), true);
      view.setUint32(16, length, true);
      view.setBigUint64(24, BigInt(this.completionGpa(index)), true);
      this.ram.write(this.completionGpa(index), new Uint8Array(DMA_COPY_COMPLETION_SIZE));
      this.ram.write(this.ringGpa + index * DMA_COPY_DESC_SIZE, desc);
      this.#tail++;
      return index;
    });
    await this.device.writeRegister(DMA_COPY_REG_TAIL, this.#tail % this.ringSize);
    return indexes;
  }

  completionGpa(index: number): number {
    return this.completionsGpa + index * DMA_COPY_COMPLETION_SIZE;
  }

  async completed(): Promise<number> {
    return this.device.readRegister(DMA_COPY_REG_COMPLETED);
  }

  /** The completion record of descriptor `index`: status and bytes copied. */
  completion(index: number): { status: number; copied: number } {
    const view = this.ram.view(this.completionGpa(index), DMA_COPY_COMPLETION_SIZE);
    return { status: view.getUint32(0, true), copied: view.getUint32(4, true) };
  }
}

/** The VMM's iommufd side: one iommufd, one IOAS, guest RAM mapped at IOVA 0. */
export async function vmmMemory(
  process: Process,
  ramSize: number,
): Promise<{ iommufd: IommufdDevice; ioas: number; ram: GuestRam }> {
  const ram = await GuestRam.create(process, ramSize);
  const iommufd = await IommufdDevice.open(process);
  const ioas = await iommufd.allocIoas();
  await iommufd.mapFile(ioas, { fd: ram.fd, length: ramSize, iova: 0 });
  return { iommufd, ioas, ram };
}

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

export { until } from '@liveupdate/vitest-config/wait-until';

/** Where the guest's drivers keep their rings and buffers, as guest-physical addresses. */
export interface VmLayout {
  readonly ramSize: number;
  readonly nic: {
    readonly ringGpa: number;
    readonly buffersGpa: number;
    readonly ringSize: number;
  };
  readonly copier: {
    readonly ringGpa: number;
    readonly completionsGpa: number;
    readonly ringSize: number;
  };
  /** Extra IOAS mappings of guest RAM: `[iova, iova + length)` → `[gpa, gpa + length)`. */
  readonly aliases?: readonly {
    readonly iova: number;
    readonly gpa: number;
    readonly length: number;
  }[];
}

/** LUO tokens of the VM's files in its session. */
export const VM_TOKENS = { memfd: 1n, iommufd: 2n, nic: 3n, copier: 4n } as const;

/**
 * A running VM as its VMM holds it: guest RAM, the iommufd with one IOAS and one paging HWPT on
 * it that both passthrough devices are attached to, and the guest's drivers.
 */
export interface Vm {
  readonly process: Process;
  readonly layout: VmLayout;
  readonly iommufd: IommufdDevice;
  readonly ioas: number;
  readonly hwpt: number;
  readonly ram: GuestRam;
  readonly nic: GuestNic;
  readonly copier: GuestCopyEngine;
  /** The VMM's `/dev/liveupdate` (exclusive: one open at a time), once it opened it. */
  luo?: LiveUpdateDevice;
}

/** The IOAS of a VM: guest RAM at IOVA 0, and its aliases. */
async function mapGuestRam(
  iommufd: IommufdDevice,
  ram: GuestRam,
  layout: VmLayout,
): Promise<number> {
  const ioas = await iommufd.allocIoas();
  await iommufd.mapFile(ioas, { fd: ram.fd, length: ram.size, iova: 0 });
  for (const alias of layout.aliases ?? []) {
    await iommufd.mapFile(ioas, {
      fd: ram.fd,
      start: alias.gpa,
      length: alias.length,
      iova: alias.iova,
    });
  }
  return ioas;
}

/**
 * Step 1 of the VMM's walk: guest RAM in a memfd sealed before it is mapped, an iommufd and an
 * IOAS mapping it, both devices bound and attached to one `IOMMU_HWPT_ALLOC` HWPT, that HWPT
 * marked for preservation under `hwptToken`. The devices are not started.
 */
export async function createVm(
  process: Process,
  layout: VmLayout,
  options: { hwptToken?: number; ram?: GuestRam } = {},
): Promise<Vm> {
  const ram = options.ram ?? (await GuestRam.create(process, layout.ramSize));
  const iommufd = await IommufdDevice.open(process);
  const ioas = await mapGuestRam(iommufd, ram, layout);
  const nicDevice = await VfioDevice.open(process, '/dev/vfio/devices/vfio0');
  const copyDevice = await VfioDevice.open(process, '/dev/vfio/devices/vfio1');
  const nicDevId = await nicDevice.bindIommufd(iommufd.fd);
  await copyDevice.bindIommufd(iommufd.fd);
  const hwpt = await iommufd.hwptAlloc(nicDevId, ioas);
  await nicDevice.attach(hwpt);
  await copyDevice.attach(hwpt);
  if (options.hwptToken !== undefined) await iommufd.hwptLuSetPreserve(hwpt, options.hwptToken);
  return {
    process,
    layout,
    iommufd,
    ioas,
    hwpt,
    ram,
    nic: new GuestNic(nicDevice, ram, layout.nic),
    copier: new GuestCopyEngine(copyDevice, ram, layout.copier),
  };
}

/**
 * Step 2: guest RAM, the iommufd and both devices preserved in `session` (or a new session of that
 * name), in that order; then interrupts off.
 */
export async function preserveVm(
  vm: Vm,
  session: LiveUpdateSession | string,
): Promise<LiveUpdateSession> {
  if (typeof session === 'string') {
    vm.luo ??= await LiveUpdateDevice.open(vm.process);
    session = await vm.luo.createSession(session);
  }
  await session.preserveFd(vm.ram.fd, VM_TOKENS.memfd);
  await session.preserveFd(vm.iommufd.fd, VM_TOKENS.iommufd);
  await session.preserveFd(vm.nic.device.fd, VM_TOKENS.nic);
  await session.preserveFd(vm.copier.device.fd, VM_TOKENS.copier);
  await vm.nic.device.disableInterrupts();
  await vm.copier.device.disableInterrupts();
  return session;
}

/** Which of the VM's files {@link restoreVm} retrieves first, second, … */
export type VmFile = keyof typeof VM_TOKENS;

/**
 * Step 3, in the new kernel's process: retrieve the session and its files in `order`, restore the
 * HWPT of `hwptToken`, bind the devices to the retrieved iommufd, map the retrieved guest RAM into
 * a new IOAS and HWPT, move both devices there without stopping them, destroy the restored HWPT,
 * then (unless `finish` is false) finish the session. With `nextHwptToken` the new HWPT is marked
 * for the following live update. `copierTail` is how many copies the guest had queued.
 */
export async function restoreVm(
  process: Process,
  layout: VmLayout,
  options: {
    sessionName: string;
    hwptToken: number;
    order?: readonly VmFile[];
    nextHwptToken?: number;
    copierTail?: number;
    finish?: boolean;
    /** The process's `/dev/liveupdate`, when it has it open already. */
    luo?: LiveUpdateDevice;
    /** The session, when the process retrieved it already. */
    session?: LiveUpdateSession;
  },
): Promise<Vm & { session: LiveUpdateSession; restoredHwpt: number }> {
  const luo = options.luo ?? (await LiveUpdateDevice.open(process));
  const session = options.session ?? (await luo.retrieveSession(options.sessionName));
  const fds: Partial<Record<VmFile, number>> = {};
  for (const file of options.order ?? (['memfd', 'iommufd', 'nic', 'copier'] as const)) {
    fds[file] = await session.retrieveFd(VM_TOKENS[file]);
  }
  const iommufd = IommufdDevice.fromFd(process, fds.iommufd!);
  const restoredHwpt = await iommufd.hwptLuRestore(options.hwptToken);
  const nicDevice = VfioDevice.fromFd(process, fds.nic!);
  const copyDevice = VfioDevice.fromFd(process, fds.copier!);
  const nicDevId = await nicDevice.bindIommufd(iommufd.fd);
  await copyDevice.bindIommufd(iommufd.fd);
  const ram = await GuestRam.fromFd(process, fds.memfd!);
  const ioas = await mapGuestRam(iommufd, ram, layout);
  const hwpt = await iommufd.hwptAlloc(nicDevId, ioas);
  await nicDevice.attach(hwpt);
  await copyDevice.attach(hwpt);
  await iommufd.destroy(restoredHwpt);
  if (options.nextHwptToken !== undefined) {
    await iommufd.hwptLuSetPreserve(hwpt, options.nextHwptToken);
  }
  if (options.finish ?? true) await session.finish();
  return {
    process,
    layout,
    iommufd,
    ioas,
    hwpt,
    ram,
    nic: new GuestNic(nicDevice, ram, layout.nic),
    copier: new GuestCopyEngine(copyDevice, ram, {
      ...layout.copier,
      ...(options.copierTail === undefined ? {} : { tail: options.copierTail }),
    }),
    luo,
    session,
    restoredHwpt,
  };
}
