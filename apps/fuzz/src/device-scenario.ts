import { LiveUpdateDevice } from '@liveupdate/core';
import {
  F_GET_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  IommuTranslation,
  NIC_CTRL_RX_ENABLE,
  NIC_DESC_DONE,
  NIC_DESC_SIZE,
  NIC_PACKET_SIZE,
  NIC_REG_CTRL,
  NIC_REG_RX_BASE_HI,
  NIC_REG_RX_BASE_LO,
  NIC_REG_RX_HEAD,
  NIC_REG_RX_SIZE,
  NIC_REG_RX_TAIL,
  PAGE_SIZE,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  nicPacketChecksum,
  type Machine,
  type Process,
} from '@liveupdate/machine';
import {
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IommufdDevice,
  type IommufdMapping,
} from '@liveupdate/plugin-iommufd';
import { MappedMemfd } from '@liveupdate/plugin-memfd';
import { VfioDevice } from '@liveupdate/plugin-vfio';
import { attempter } from './attempter.js';
import type { Random } from './random.js';
import type { Scenario, Verdict } from './scenario.js';

/** The passthrough NIC; vfio-pci's first cdev. */
export const NIC_BDF = '00:03.0';
const NIC_CDEV = '/dev/vfio/devices/vfio0';
/**
 * 100 packets/s into a ring of {@link RING_SIZE}: it fills after 80 s, longer than an update may
 * take (60 s), so the ring never wraps and no packet is dropped.
 */
const PACKETS_PER_SECOND = 100;
export const RING_SIZE = 8192;

/** Guest RAM: a sealed memfd, filled with seeded random bytes. */
const RAM_SIZE = 2 * 1024 * 1024;
/** Where the NIC's descriptor ring and packet buffers are in guest RAM (offsets in the memfd). */
const RING_OFFSET = 0x1_0000;
export const BUFFERS_OFFSET = 0x4_0000;
const DMA_AREAS = [
  { start: RING_OFFSET, end: RING_OFFSET + RING_SIZE * NIC_DESC_SIZE },
  { start: BUFFERS_OFFSET, end: BUFFERS_OFFSET + RING_SIZE * NIC_PACKET_SIZE },
];

/**
 * The IOAS: all of guest RAM at {@link RAM_IOVA} — not 2 MiB-aligned, so the IOMMU maps it with
 * 4 KiB leaves, each of which a damaged page table could redirect — and two aliases of parts of
 * it elsewhere, one read-only.
 */
export const RAM_IOVA = 0x10_0000;
const RW = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
export const MAPS = [
  { iova: RAM_IOVA, start: 0, length: RAM_SIZE, prot: RW },
  { iova: 0x4000_0000, start: 0x18_0000, length: 0x1_0000, prot: IOMMU_IOAS_MAP_READABLE },
  { iova: 0x8000_0000, start: 0x1c_0000, length: 0x2_0000, prot: RW },
];

const SESSION = 'vm';
const TOKENS = { memfd: 1, iommufd: 2, nic: 3 } as const;
/** The HWPT's token in its iommufd. */
export const HWPT_TOKEN = 5;
/** Packets the NIC must write after the update, through the restored page tables. */
const PACKETS_AFTER = 5;
/** Bound of each wait for packets; far more than {@link PACKETS_AFTER} take at any load. */
const PACKET_WAIT_MS = 20_000;

/** What the device scenario preserved. */
export interface PreservedVm {
  /** Guest RAM when it was preserved; outside {@link DMA_AREAS} it must come back as it was. */
  readonly content: Uint8Array;
  readonly seals: number;
  /** The IOAS's mappings as the old kernel's iommufd reported them. */
  readonly mappings: readonly IommufdMapping[];
  /** Packets the NIC had written when the session was preserved. */
  readonly packets: number;
}

/**
 * The device scenario, a VMM's VM: guest RAM in a sealed memfd of random bytes, an iommufd whose
 * IOAS maps it (three mappings), a passthrough NIC (vfio-pci) attached to a paging HWPT on that
 * IOAS marked for preservation, receiving packets into a ring in guest RAM all through the update;
 * memfd, iommufd and NIC preserved in one session. The handover has every device structure: the
 * KHO `iommu` and `pci` subtrees, the IOMMU FLB, `iommufd_lu` and `vfio_pci_core_device_ser`.
 *
 * Verified against what was preserved: the memfd's size, seals and bytes (outside the NIC's
 * ring and buffers); the restored HWPT; every page of every mapping as the IOMMU translates the
 * NIC's DMA in the new kernel (the frame of the retrieved memfd at that offset, with the
 * mapping's permissions); and the NIC's packets, all in order and intact at their offsets in the
 * retrieved memfd, including {@link PACKETS_AFTER} written after the update. A DMA that lands
 * anywhere else is a misread.
 */
export const deviceScenario: Scenario<PreservedVm> = {
  name: 'device',
  modules: ['@liveupdate/plugin-memfd', '@liveupdate/plugin-iommufd', '@liveupdate/plugin-vfio'],
  devices: [{ kind: 'nic', bdf: NIC_BDF, packetsPerSecond: PACKETS_PER_SECOND }],
  preserve,
  verify,
};

async function preserve(process: Process, random: Random): Promise<PreservedVm> {
  const seals = F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL;
  const ram = await MappedMemfd.create(process, 'guest-ram', RAM_SIZE, { seals });
  ram.write(
    0,
    Uint8Array.from({ length: RAM_SIZE }, () => random.below(256)),
  );
  const iommufd = await IommufdDevice.open(process);
  const ioas = await iommufd.allocIoas();
  for (const map of MAPS) await iommufd.mapFile(ioas, { fd: ram.fd, ...map });
  const nic = await VfioDevice.open(process, NIC_CDEV);
  const hwpt = await iommufd.hwptAlloc(await nic.bindIommufd(iommufd.fd), ioas);
  await nic.attach(hwpt);
  await iommufd.hwptLuSetPreserve(hwpt, HWPT_TOKEN);
  await startNic(ram, nic);
  await waitFor(async () => (await nic.readRegister(NIC_REG_RX_HEAD)) >= 3, 'the first packets');

  const session = await (await LiveUpdateDevice.open(process)).createSession(SESSION);
  await session.preserveFd(ram.fd, TOKENS.memfd);
  await session.preserveFd(iommufd.fd, TOKENS.iommufd);
  await session.preserveFd(nic.fd, TOKENS.nic);
  return {
    content: ram.read(0, RAM_SIZE),
    seals,
    mappings: await iommufd.mappings(ioas),
    packets: await nic.readRegister(NIC_REG_RX_HEAD),
  };
}

/** The guest's driver: descriptors pointing at the buffers, the ring programmed, receive on. */
async function startNic(ram: MappedMemfd, nic: VfioDevice): Promise<void> {
  const desc = new Uint8Array(NIC_DESC_SIZE);
  const view = new DataView(desc.buffer);
  for (let i = 0; i < RING_SIZE; i++) {
    view.setBigUint64(0, BigInt(RAM_IOVA + BUFFERS_OFFSET + i * NIC_PACKET_SIZE), true);
    view.setUint16(8, NIC_PACKET_SIZE, true);
    ram.write(RING_OFFSET + i * NIC_DESC_SIZE, desc);
  }
  await nic.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  await nic.writeRegister(NIC_REG_RX_BASE_LO, RAM_IOVA + RING_OFFSET);
  await nic.writeRegister(NIC_REG_RX_BASE_HI, 0);
  await nic.writeRegister(NIC_REG_RX_SIZE, RING_SIZE);
  await nic.writeRegister(NIC_REG_RX_HEAD, 0);
  await nic.writeRegister(NIC_REG_RX_TAIL, 0);
  await nic.writeRegister(NIC_REG_CTRL, NIC_CTRL_RX_ENABLE);
}

async function verify(
  process: Process,
  preserved: PreservedVm,
  machine: Machine,
): Promise<Verdict> {
  const misread: string[] = [];
  const failed: string[] = [];
  const attempt = attempter(failed);
  const device = await attempt('open /dev/liveupdate', () => LiveUpdateDevice.open(process));
  const session =
    device && (await attempt(`retrieve ${SESSION}`, () => device.retrieveSession(SESSION)));
  if (!session) return { misread, failed };
  const fds: Partial<Record<keyof typeof TOKENS, number>> = {};
  for (const [file, token] of Object.entries(TOKENS) as [keyof typeof TOKENS, number][]) {
    fds[file] = await attempt(`retrieve ${SESSION} ${file} (token ${token})`, () =>
      session.retrieveFd(token),
    );
  }
  const ram =
    fds.memfd === undefined
      ? undefined
      : await attempt('map the guest RAM memfd', () => MappedMemfd.map(process, fds.memfd!));
  if (ram) {
    const seals = await attempt('F_GET_SEALS of guest RAM', () =>
      process.fcntl(ram.fd, F_GET_SEALS),
    );
    if (seals !== undefined && seals !== preserved.seals)
      misread.push(`guest RAM: seals ${seals}, preserved ${preserved.seals}`);
    if (ram.size !== RAM_SIZE) {
      misread.push(`guest RAM: size ${ram.size}, preserved ${RAM_SIZE}`);
      return { misread, failed };
    }
    const outside = compareOutsideDma(ram.read(0, RAM_SIZE), preserved.content);
    if (outside) misread.push(outside);
  }
  if (!ram || fds.iommufd === undefined || fds.nic === undefined) return { misread, failed };
  const iommufd = IommufdDevice.fromFd(process, fds.iommufd);
  const restored = await attempt(`IOMMU_HWPT_LU_RESTORE of token ${HWPT_TOKEN}`, () =>
    iommufd.hwptLuRestore(HWPT_TOKEN),
  );
  if (restored === undefined) return { misread, failed };
  misread.push(...checkTranslations(machine, ram, preserved.mappings));
  // The VMM binds the NIC to the retrieved iommufd before it touches the device.
  const nic = VfioDevice.fromFd(process, fds.nic);
  if (
    (await attempt('bind the NIC to the iommufd', () => nic.bindIommufd(iommufd.fd))) === undefined
  )
    return { misread, failed };
  misread.push(...(await checkPackets(nic, ram, preserved, machine)));
  return { misread, failed };
}

/** The first byte of guest RAM outside the NIC's ring and buffers that is not as preserved. */
function compareOutsideDma(now: Uint8Array, preserved: Uint8Array): string | undefined {
  let from = 0;
  for (const area of [...DMA_AREAS, { start: RAM_SIZE, end: RAM_SIZE }]) {
    const a = Buffer.from(now.subarray(from, area.start));
    const b = Buffer.from(preserved.subarray(from, area.start));
    if (!a.equals(b)) {
      const at = from + a.findIndex((byte, i) => byte !== b[i]);
      return `guest RAM: byte ${at} (outside the NIC's ring and buffers) differs from what was preserved`;
    }
    from = area.end;
  }
  return undefined;
}

/**
 * Every page of every preserved mapping, translated by the IOMMU for the NIC as its next DMA
 * would be: it must reach the frame of the retrieved memfd at the mapping's offset, readable,
 * and writable exactly when the mapping is.
 */
function checkTranslations(
  machine: Machine,
  ram: MappedMemfd,
  mappings: readonly IommufdMapping[],
): string[] {
  const translation = new IommuTranslation(machine.memory, machine.hardware.iommu);
  translation.sync();
  const bdf = machine.hardware.function(NIC_BDF).bdf;
  const physOf = (offset: number): number => {
    const segment = ram.mapping.segments.find(
      (s) => offset >= s.offset && offset < s.offset + s.bytes.length,
    );
    if (!segment) throw new Error(`offset ${offset} is outside the guest RAM mapping`);
    return segment.phys + (offset - segment.offset);
  };
  const wrong: string[] = [];
  for (const map of mappings) {
    let pages = 0;
    let first = '';
    for (let off = 0; off < map.length; off += PAGE_SIZE) {
      const expected = physOf(map.start + off);
      const read = translation.translate(bdf, map.iova + off, false);
      const write = translation.translate(bdf, map.iova + off, true);
      const writable = (map.prot & IOMMU_IOAS_MAP_WRITEABLE) !== 0;
      const problem =
        read.phys !== expected
          ? `reads ${read.fault ?? `frame 0x${read.phys.toString(16)}`}`
          : writable && write.phys !== expected
            ? `writes ${write.fault ?? `frame 0x${write.phys.toString(16)}`}`
            : !writable && write.fault === undefined
              ? 'is writable'
              : '';
      if (!problem) continue;
      pages++;
      first ||= `IOVA 0x${(map.iova + off).toString(16)} ${problem}, memfd offset 0x${(map.start + off).toString(16)} is frame 0x${expected.toString(16)}`;
    }
    if (pages > 0)
      wrong.push(
        `mapping at IOVA 0x${map.iova.toString(16)}: ${pages} page(s) translated wrong (${first})`,
      );
  }
  return wrong;
}

/**
 * Wait for {@link PACKETS_AFTER} more packets than the NIC had written when the new kernel's
 * process got to it (so they went through the restored page tables), then check every packet in
 * the retrieved memfd: descriptor done, the packet numbered in order, intact, at its buffer's
 * offset.
 */
async function checkPackets(
  nic: VfioDevice,
  ram: MappedMemfd,
  preserved: PreservedVm,
  machine: Machine,
): Promise<string[]> {
  const faults = machine.counters().faults;
  const target = (await nic.readRegister(NIC_REG_RX_HEAD)) + PACKETS_AFTER;
  try {
    await waitFor(
      async () => (await nic.readRegister(NIC_REG_RX_HEAD)) >= target,
      `packet ${target}`,
      PACKET_WAIT_MS,
    );
  } catch {
    const head = await nic.readRegister(NIC_REG_RX_HEAD);
    return [
      `the NIC's head stayed at ${head} (preserved at ${preserved.packets}) for ${PACKET_WAIT_MS / 1000} s after retrieve; ${machine.counters().faults - faults} IOMMU fault(s) meanwhile`,
    ];
  }
  const head = await nic.readRegister(NIC_REG_RX_HEAD);
  for (let i = 0; i < head; i++) {
    const desc = ram.read(RING_OFFSET + i * NIC_DESC_SIZE, NIC_DESC_SIZE);
    const descView = new DataView(desc.buffer);
    const packet = ram.read(BUFFERS_OFFSET + i * NIC_PACKET_SIZE, NIC_PACKET_SIZE);
    const view = new DataView(packet.buffer);
    const when = i < preserved.packets ? 'before' : 'after';
    if ((descView.getUint32(12, true) & NIC_DESC_DONE) === 0)
      return [
        `NIC packet ${i} of ${head} (${when} the update): its descriptor is not done in guest RAM`,
      ];
    if (
      view.getBigUint64(0, true) !== BigInt(i) ||
      view.getUint32(12, true) !== nicPacketChecksum(packet)
    )
      return [
        `NIC packet ${i} of ${head} (${when} the update): not in guest RAM at its buffer (sequence ${view.getBigUint64(0, true)})`,
      ];
  }
  return [];
}

/** Poll `done` every 5 ms until it holds; throw "timed out waiting for `what`" after `ms`. */
async function waitFor(
  done: () => Promise<boolean>,
  what: string,
  ms = PACKET_WAIT_MS,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await done())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
