import { describe, expect, it } from 'vitest';
import { until } from '@liveupdate/vitest-config/wait-until';
import {
  MachineHaltedError,
  type IommuFault,
  type Machine,
  type MachineOptions,
  type PhysicalMemory,
  type Process,
} from '@liveupdate/machine';
import { PROBE, bootedMachine, kexec, testImage } from './helpers.js';
import { sealKhoHandover } from '../src/kho/seal-kho-handover.js';
import { damageKhoSubtreeName, khoSubtreeBlob } from './kho-subtree.js';

const NIC_LU = new URL('./fixtures/nic-live-update.js', import.meta.url).href;
const KEPT = '00:03.0';
const DROPPED = '00:05.0';
const POISON = 0xaa;
/** 2048 descriptors at 500 packets/s: about four seconds before the ring fills and drops. */
const RING_SIZE = 2048;

interface Started {
  domainId: number;
  frames: { phys: number; length: number }[];
}
interface Ring {
  head: number;
  drops: number;
  packets: { done: boolean; sequence: number; checksumOk: boolean }[];
}
interface State {
  incoming: boolean;
  busMaster: boolean;
  restored: { id: number; pageTableRoot: number } | null;
  attached: { id: number; pageTableRoot: number } | null;
  domains: number[];
  translationEnabled: boolean;
}
interface Replaced {
  restoredId: number;
  restoredRoot: number;
  freshId: number;
  freeBefore: number;
  freeAfter: number;
}

const image = (version: string) => testImage(version, { modules: [PROBE, NIC_LU] });
const nic = <T>(process: Process, op: string, args: object = {}): Promise<T> =>
  process.syscall('nic_lu', op, args) as Promise<T>;

interface AtHandover {
  translation: boolean;
  busMaster: boolean[];
  keptPackets: number;
  droppedPackets: number;
}

/** Boot with two NICs, start both, preserve the first; `corrupt` may damage RAM at the handover. */
async function startAndPreserve(
  onHandover?: (memory: PhysicalMemory, khoFdtPhys: number) => void,
): Promise<{
  machine: Machine;
  process: Process;
  dropped: Started;
  at: () => AtHandover | undefined;
}> {
  let at: AtHandover | undefined;
  const options: MachineOptions = {
    devices: [
      // 100 packets/s fills a ring of 2048 after 20 s: nobody consumes it, and on a loaded
      // machine a test can take several seconds from start to its last wait for packets.
      { kind: 'nic', bdf: KEPT, packetsPerSecond: 100 },
      { kind: 'nic', bdf: DROPPED, packetsPerSecond: 100 },
    ],
    onHandover: ({ memory, khoFdtPhys }) => {
      at = {
        translation: machine.hardware.iommu.translationEnabled,
        busMaster: machine.hardware.functions.map((f) => f.busMaster),
        keptPackets: machine.counters(KEPT).packets,
        droppedPackets: machine.counters(DROPPED).packets,
      };
      onHandover?.(memory, khoFdtPhys!);
    },
  };
  const machine = await bootedMachine(image('6.18.0'), options);
  const process = machine.spawn();
  const dropped = await nic<Started>(process, 'start', { bdf: DROPPED, ringSize: RING_SIZE });
  await nic<Started>(process, 'start', { bdf: KEPT, ringSize: RING_SIZE });
  await until(() => machine.counters(KEPT).packets >= 20, 'machine.counters(KEPT).packets >= 20');
  await nic(process, 'preserve');
  return { machine, process, dropped, at: () => at };
}

function expectInSequence(ring: Ring): void {
  expect(ring.drops).toBe(0);
  expect(ring.packets.map((p) => p.sequence)).toEqual([...Array(ring.head).keys()]);
  expect(ring.packets.every((p) => p.done && p.checksumOk)).toBe(true);
}

describe('a device live update', () => {
  it('keeps a preserved NIC delivering through the kexec with no fault while the other NIC is reset', async () => {
    const { machine, process, dropped, at } = await startAndPreserve();
    const next = await kexec(machine, process, image('6.18.1'));
    const handover = at()!;
    expect(handover).toMatchObject({ translation: true, busMaster: [true, false] });

    // The kept NIC delivers after the handover, in sequence, into the same frames.
    await until(
      () => machine.counters(KEPT).packets >= handover.keptPackets + 30,
      'machine.counters(KEPT).packets >= handover.keptPackets + 30',
    );
    const ring = await nic<Ring>(next, 'ring');
    expect(ring.head).toBeGreaterThanOrEqual(handover.keptPackets + 30);
    expectInSequence(ring);
    expect(machine.counters(KEPT).faults).toBe(0);
    expect(await nic<IommuFault[]>(next, 'faults')).toEqual([]);

    // The other NIC was reset: it delivers nothing more, and its frames stay poisoned.
    expect(machine.counters(DROPPED).packets).toBe(handover.droppedPackets);
    for (const { phys, length } of dropped.frames) {
      expect(machine.memory.read(phys, length).every((b) => b === POISON)).toBe(true);
    }
    expect(machine.dmesg(0)).toContain(
      'pci 0000:00:03.0: shutdown: preserved for live update, left running',
    );
    expect(machine.dmesg(0)).toContain(
      'pci 0000:00:05.0: shutdown: bus mastering off, function reset',
    );
    expect(machine.dmesg(1)).toMatch(/DMAR: live update: root table at 0x[0-9a-f]+ kept/);
  });

  it('lets the new kernel find the restored domain, replace it hitlessly, free it and keep ids unique', async () => {
    const { machine, process } = await startAndPreserve();
    const next = await kexec(machine, process, image('6.18.1'));
    const state = await nic<State>(next, 'state');
    expect(state).toMatchObject({ incoming: true, busMaster: true, translationEnabled: true });
    expect(state.restored).not.toBeNull();
    expect(state.attached).toEqual(state.restored);
    expect(state.domains).toEqual([state.restored!.id]);
    // Ids handed out while the restored domain lives skip its id.
    const ids = await nic<number[]>(next, 'allocDomains', { count: 3 });
    expect(ids).not.toContain(state.restored!.id);

    const replaced = await nic<Replaced>(next, 'replace');
    expect(replaced.freshId).not.toBe(replaced.restoredId);
    // The restored domain's table frames (4 levels for the ring and buffers) went back.
    expect(replaced.freeAfter - replaced.freeBefore).toBeGreaterThanOrEqual(4);
    const root = machine.memory.read(replaced.restoredRoot, 4096);
    expect(root.every((b) => b === POISON)).toBe(true);
    const after = await nic<State>(next, 'state');
    expect(after).toMatchObject({ incoming: false, restored: null });
    expect(after.attached!.id).toBe(replaced.freshId);

    const packets = machine.counters(KEPT).packets;
    await until(
      () => machine.counters(KEPT).packets >= packets + 20,
      'machine.counters(KEPT).packets >= packets + 20',
    );
    expectInSequence(await nic<Ring>(next, 'ring'));
    expect(machine.counters(KEPT).faults).toBe(0);
  });

  it('works a second time in a row: the new domain is preserved and restored in the third kernel', async () => {
    const { machine, process } = await startAndPreserve();
    const second = await kexec(machine, process, image('6.18.1'));
    const replaced = await nic<Replaced>(second, 'replace');
    await nic(second, 'preserve');
    const third = await kexec(machine, second, image('6.18.2'));
    const state = await nic<State>(third, 'state');
    expect(state.restored!.id).toBe(replaced.freshId);
    expect(state.incoming).toBe(true);
    const packets = machine.counters(KEPT).packets;
    await until(
      () => machine.counters(KEPT).packets >= packets + 20,
      'machine.counters(KEPT).packets >= packets + 20',
    );
    expectInSequence(await nic<Ring>(third, 'ring'));
    expect(machine.counters(KEPT).faults).toBe(0);
  });

  const iommuBlob = (memory: PhysicalMemory, fdt: number) => khoSubtreeBlob(memory, fdt, 'iommu');
  const corruptions: [string, (memory: PhysicalMemory, fdt: number) => void, RegExp][] = [
    [
      'another compatible',
      (memory, fdt) => memory.write(iommuBlob(memory, fdt) + 18, new Uint8Array([0x39])),
      /^DMAR: Failed to restore IOMMU Live Update FLB: compatible "iommu-liveupdate-v9"/,
    ],
    [
      'a device count past the blob',
      (memory, fdt) => memory.writeU32(iommuBlob(memory, fdt) + 48, 1000),
      /^DMAR: Failed to restore IOMMU Live Update FLB: counts .* need \d+ bytes/,
    ],
    [
      'a page-table frame that was not preserved',
      (memory, fdt) => {
        // The last u64 of the blob is the domain's last table frame: point it at the firmware area.
        const blob = iommuBlob(memory, fdt);
        const size = 56 + 16 + 16 + 8 + memory.readU32(blob + 52) * 8;
        memory.writeU64(blob + size - 8, 0x1000n);
      },
      /^DMAR: Failed to restore IOMMU Live Update FLB: domain \d+ table 0x1000: EINVAL: kho: 0x1000 was not preserved/,
    ],
    [
      'a damaged iommu subtree name (not a cold start)',
      (memory, fdt) => damageKhoSubtreeName(memory, fdt, 'iommu'),
      /^DMAR: Failed to restore IOMMU Live Update FLB: translation is on with root table 0x[0-9a-f]+, so the previous kernel kept devices translating, but there is no iommu subtree: the handover is damaged$/,
    ],
    [
      'a damaged pci subtree name (not a cold start)',
      (memory, fdt) => damageKhoSubtreeName(memory, fdt, 'pci'),
      /^PCI: Failed to restore PCI Live Update FLB: no pci subtree, but 0000:00:03\.0 still master the bus/,
    ],
    [
      'a pci_ser naming a device the IOMMU did not preserve',
      (memory, fdt) => {
        // pci_dev_ser[0].bdf: the kept NIC becomes the other one, which exists on the bus.
        memory.write(khoSubtreeBlob(memory, fdt, 'pci') + 20, Uint8Array.of(0x28, 0));
      },
      /^DMAR: Failed to restore IOMMU Live Update FLB: preserved devices disagree: pci_ser lists 0000:00:05\.0, the iommu handover does not; the iommu handover lists 0000:00:03\.0, pci_ser does not$/,
    ],
  ];
  it.each(corruptions)(
    'makes the new kernel panic on a corrupted device handover, the kept NIC left running: %s',
    async (_name, corrupt, reason) => {
      // Resealed: the drivers' own checks are what is tested, not KHO's blob-crc.
      const { machine, process } = await startAndPreserve((memory, fdt) => {
        corrupt(memory, fdt);
        sealKhoHandover(memory, fdt);
      });
      await process.kexecLoad(image('6.18.1'));
      const error = await process.reboot(0x45584543).catch((e: unknown) => e);
      expect(MachineHaltedError.isInstance(error)).toBe(true);
      expect(machine.panicReason).toMatch(reason);
      expect(machine.dmesg(1)).not.toMatch(/Run \/sbin\/init/);
      // Nothing reset the kept NIC nor turned translation off on the way to the panic.
      expect(machine.hardware.iommu.translationEnabled).toBe(true);
      expect(machine.hardware.functions.map((f) => f.busMaster)).toEqual([true, false]);
    },
  );

  it.each(['iommu', 'pci'])(
    "makes the new kernel panic on a changed byte of the %s blob, caught by KHO's blob-crc",
    async (name) => {
      const { machine, process } = await startAndPreserve((memory, fdt) => {
        // A byte of the device state past the headers: no field check could tell.
        const blob = khoSubtreeBlob(memory, fdt, name);
        memory.write(blob + 20, Uint8Array.of(memory.read(blob + 20, 1)[0]! ^ 0x01));
      });
      await process.kexecLoad(image('6.18.1'));
      const error = await process.reboot(0x45584543).catch((e: unknown) => e);
      expect(MachineHaltedError.isInstance(error)).toBe(true);
      expect(machine.panicReason).toMatch(
        new RegExp(
          `^KHO: subtree "${name}" blob-crc 0x[0-9a-f]+ does not match its blob \\(0x[0-9a-f]+\\)$`,
        ),
      );
      expect(machine.dmesg(1)).not.toMatch(/Run \/sbin\/init/);
      expect(machine.hardware.iommu.translationEnabled).toBe(true);
    },
  );
});
