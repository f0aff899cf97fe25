// The scenario: a VMM's passthrough NIC streams packets into guest RAM and a copy engine
// copies while the kernel is live-updated; then every ordering mistake the VMM can make.
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import {
  DMA_COPY_MAX_LENGTH,
  DMA_COPY_STATUS,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MEMORY,
  NIC_REG_RX_HEAD,
  type Machine,
  type Process,
} from '@liveupdate/machine';
import { IommufdDevice } from '@liveupdate/plugin-iommufd';
import { VfioDevice } from '../src/index.js';
import {
  COPY_BDF,
  COPY_CDEV,
  NIC_BDF,
  NIC_CDEV,
  POISON,
  bootVfio,
  errnoOf,
  testkitStats,
  warmUpIommu,
} from './helpers.js';
import {
  GuestRam,
  MiB,
  VM_TOKENS,
  createVm,
  preserveVm,
  restoreVm,
  sleep,
  until,
  type Vm,
  type VmFile,
  type VmLayout,
} from './vmm.js';

/**
 * 16384 receive descriptors at 1000 packets/s: the ring fills after 16 s, far longer than a live
 * update and the checks around it take even on a loaded 2-core machine, so no packet may drop.
 */
const NIC_RING = 16384;
const PACKETS_PER_SECOND = 1000;
/**
 * 4095 queued copies of {@link COPY_CHUNK} at {@link COPIES_PER_SECOND}: over four seconds of work
 * for the copy engine whatever the host's load, which spans the blackout. (Copies without a rate
 * made the span depend on the CPU: too short on an idle machine, too long on a loaded one.)
 */
const COPY_RING = 4096;
const COPIES_PER_SECOND = 1000;
const COPY_CHUNK = 64 * 1024;
const SOURCE_GPA = 0x20_0000;
const DESTINATION_GPA = 0x30_0000;
/** Where the guest-RAM aliases land (see the freed-frames check). */
const ALIAS_TARGET_GPA = 0x40_0000;

const LAYOUT: VmLayout = {
  ramSize: 8 * MiB,
  nic: { ringGpa: 0x1_0000, buffersGpa: 0x10_0000, ringSize: NIC_RING },
  copier: { ringGpa: 0x5_0000, completionsGpa: 0x7_0000, ringSize: COPY_RING },
};

const source = Uint8Array.from({ length: MiB }, (_, i) => (i * 7 + (i >> 12) + 3) & 0xff);

/** `copy` as copies of at most {@link COPY_CHUNK} bytes each, in order. */
function chunked(copy: { src: number; dst: number; length: number }) {
  return Array.from({ length: Math.ceil(copy.length / COPY_CHUNK) }, (_, i) => ({
    src: copy.src + i * COPY_CHUNK,
    dst: copy.dst + i * COPY_CHUNK,
    length: Math.min(COPY_CHUNK, copy.length - i * COPY_CHUNK),
  }));
}

/** The NIC's ring holds `head` packets, each intact and numbered from 0, and the NIC dropped none. */
async function expectRingInSequence(machine: Machine, vm: Vm): Promise<number> {
  const head = await vm.nic.head();
  const packets = vm.nic.packets(head);
  expect(packets.filter((p) => !p.checksumOk || p.length !== 64)).toEqual([]);
  const wrong = packets.findIndex((p, i) => p.sequence !== i);
  expect(wrong).toBe(-1);
  expect(machine.counters(NIC_BDF).drops).toBe(0);
  return head;
}

/** Counters of both devices sampled every millisecond, with the machine's clock. */
function sampleCounters(machine: Machine) {
  const samples: { time: number; packets: number; copies: number }[] = [];
  const sample = () =>
    samples.push({
      time: machine.now(),
      packets: machine.counters(NIC_BDF).packets,
      copies: machine.counters(COPY_BDF).copies,
    });
  const timer = setInterval(sample, 1);
  return {
    samples,
    stop: () => clearInterval(timer),
    /** What the devices did between `from` and `to`, from the samples just inside the window. */
    between(from: number, to: number) {
      const first = samples.find((s) => s.time >= from);
      const last = samples.findLast((s) => s.time <= to);
      if (!first || !last || last.time <= first.time) return { packets: 0, copies: 0, span: 0 };
      return {
        packets: last.packets - first.packets,
        copies: last.copies - first.copies,
        span: last.time - first.time,
      };
    },
  };
}

describe('a VM live update with passthrough devices (vfio-pci-v1, iommufd-v1, memfd)', () => {
  it('keeps the NIC streaming and the copy engine copying through the kexec: no fault, no drop, nothing in freed frames', async () => {
    let atHandover: { packets: number; copies: number; faults: number } | undefined;
    const harness = await bootVfio({
      packetsPerSecond: PACKETS_PER_SECOND,
      copiesPerSecond: COPIES_PER_SECOND,
      onHandover: () => {
        atHandover = {
          packets: machine.counters(NIC_BDF).packets,
          copies: machine.counters(COPY_BDF).copies,
          faults: machine.counters().faults,
        };
      },
    });
    const { machine, process } = harness;
    const vm = await createVm(process, LAYOUT);
    vm.ram.write(SOURCE_GPA, source);
    await vm.copier.start();

    // Frames the old kernel maps for the device, which DMA fills, and which are then freed.
    const oldFd = await process.memfdCreate('old-buffers');
    await process.ftruncate(oldFd, MiB);
    const oldMapping = await process.mmap(oldFd, MiB);
    await vm.iommufd.mapFile(vm.ioas, { fd: oldFd, length: MiB, iova: 64 * MiB });
    await vm.copier.copy(SOURCE_GPA, 64 * MiB, MiB);
    await until(async () => (await vm.copier.completed()) >= 1, 'the copy into the old buffers');
    const freed = oldMapping.segments.map((s) => ({ phys: s.phys, bytes: s.bytes }));
    expect(Buffer.concat(freed.map((f) => f.bytes)).equals(Buffer.from(source))).toBe(true);
    await vm.iommufd.unmap(vm.ioas, 64 * MiB, MiB);
    await process.munmap(oldMapping);
    await process.close(oldFd);
    // Guest RAM is also mapped at IOVAs equal to those frames' physical addresses: a device whose
    // DMA went untranslated (or through the wrong tables) would write into the freed frames.
    let offset = 0;
    const aliases = freed
      .filter((f) => f.phys >= LAYOUT.ramSize)
      .map((f) => {
        const alias = { iova: f.phys, gpa: ALIAS_TARGET_GPA + offset, length: f.bytes.length };
        offset += f.bytes.length;
        return alias;
      });
    expect(offset).toBeGreaterThan(0);
    for (const alias of aliases) {
      await vm.iommufd.mapFile(vm.ioas, {
        fd: vm.ram.fd,
        start: alias.gpa,
        length: alias.length,
        iova: alias.iova,
      });
    }
    const layout: VmLayout = { ...LAYOUT, aliases };
    await vm.iommufd.hwptLuSetPreserve(vm.hwpt, 1);

    await vm.nic.start();
    await until(async () => (await vm.nic.head()) >= 20, 'packets before the update');
    await preserveVm(vm, 'vm0');
    // Copies queued for the blackout alternate between chunks of guest RAM and of the aliases,
    // cycling so that every chunk is copied many times.
    const ramChunks = chunked({ src: SOURCE_GPA, dst: DESTINATION_GPA, length: MiB });
    const aliasChunks = aliases.flatMap((alias) =>
      chunked({
        src: SOURCE_GPA + (alias.gpa - ALIAS_TARGET_GPA),
        dst: alias.iova,
        length: alias.length,
      }),
    );
    const copies = Array.from({ length: COPY_RING - 1 }, (_, i) =>
      i % 2 === 0
        ? ramChunks[(i / 2) % ramChunks.length]!
        : aliasChunks[((i - 1) / 2) % aliasChunks.length]!,
    );
    const queued = await vm.copier.queue(copies);
    const sampler = sampleCounters(machine);
    const oldBoot = machine.bootCount - 1;
    let next: Process;
    let firstSyscall: number;
    try {
      next = await harness.liveUpdate();
      firstSyscall = machine.now();
      await sleep(20);
    } finally {
      sampler.stop();
    }
    const reboot = machine.spans({ name: 'reboot', boot: oldBoot })[0]!;
    const blackout = sampler.between(reboot.start, firstSyscall);
    // The devices worked through the blackout: from the old kernel's reboot to the new process.
    expect(blackout.packets).toBeGreaterThan(0);
    expect(blackout.copies).toBeGreaterThan(0);
    expect(atHandover!.packets).toBeGreaterThan(sampler.samples[0]!.packets);
    expect(atHandover!.faults).toBe(0);

    const restored = await restoreVm(next, layout, {
      sessionName: 'vm0',
      hwptToken: 1,
      copierTail: vm.copier.tail,
    });
    await until(async () => (await restored.nic.head()) >= atHandover!.packets + 50, 'packets');
    // Stop the NIC before waiting for the copies: nobody consumes its ring meanwhile, and on a
    // loaded machine the copies can outlast the 16 s the ring holds.
    await restored.nic.stop();
    await until(
      async () => (await restored.copier.completed()) >= vm.copier.tail,
      'the queued copies',
      60_000,
    );

    expect(machine.counters().faults).toBe(0);
    expect(machine.hardware.iommu.faults()).toEqual([]);
    const head = await expectRingInSequence(machine, restored);
    expect(head).toBeGreaterThan(atHandover!.packets);
    for (const index of queued) {
      expect(restored.copier.completion(index)).toEqual({
        status: DMA_COPY_STATUS.SUCCESS,
        copied: copies[index - queued[0]!]!.length,
      });
    }
    expect(Buffer.from(restored.ram.read(DESTINATION_GPA, MiB)).equals(Buffer.from(source))).toBe(
      true,
    );
    // What went to the aliases is in guest RAM, and the freed frames hold the new kernel's poison.
    expect(
      Buffer.from(restored.ram.read(ALIAS_TARGET_GPA, offset)).equals(
        Buffer.from(source.subarray(0, offset)),
      ),
    ).toBe(true);
    for (const frame of freed) expect(frame.bytes.every((b) => b === POISON)).toBe(true);
    expect(machine.dmesg(oldBoot)).toContain(
      'pci 0000:00:03.0: shutdown: preserved for live update, left running',
    );
  });

  it('restores memfd, iommufd and devices retrieved in any order, three live updates in a row', async () => {
    const harness = await bootVfio({ packetsPerSecond: PACKETS_PER_SECOND });
    const { machine } = harness;
    let vm: Vm = await createVm(harness.process, LAYOUT, { hwptToken: 1 });
    await vm.nic.start();
    const orders: VmFile[][] = [
      ['copier', 'nic', 'memfd', 'iommufd'],
      ['iommufd', 'memfd', 'copier', 'nic'],
      ['nic', 'iommufd', 'copier', 'memfd'],
    ];
    for (const [round, order] of orders.entries()) {
      await until(async () => (await vm.nic.head()) >= 20 * (round + 1), 'packets');
      await preserveVm(vm, `vm${round}`);
      const packets = machine.counters(NIC_BDF).packets;
      const next = await harness.liveUpdate();
      // Retrieving an iommufd-backed file first, or a device before its iommufd, works alike.
      const restored = await restoreVm(next, LAYOUT, {
        sessionName: `vm${round}`,
        hwptToken: round + 1,
        order,
        nextHwptToken: round + 2,
      });
      expect(restored.restoredHwpt).not.toBe(restored.hwpt);
      await until(() => machine.counters(NIC_BDF).packets >= packets + 30, 'packets after');
      vm = restored;
    }
    // A copy through the VMM's latest HWPT works too.
    vm.ram.write(SOURCE_GPA, source);
    await vm.copier.start();
    const index = await vm.copier.copy(SOURCE_GPA, DESTINATION_GPA, 4096);
    await until(async () => (await vm.copier.completed()) >= 1, 'a copy');
    expect(vm.copier.completion(index)).toEqual({ status: DMA_COPY_STATUS.SUCCESS, copied: 4096 });
    await vm.nic.stop();
    await expectRingInSequence(machine, vm);
    expect(machine.counters().faults).toBe(0);
    expect(machine.bootCount).toBe(4);
  });

  it('claims a preserved device for its session: the cdev is EBUSY and FINISH refused until it is retrieved and bound', async () => {
    const harness = await bootVfio({ packetsPerSecond: PACKETS_PER_SECOND });
    const vm = await createVm(harness.process, LAYOUT, { hwptToken: 1 });
    await vm.nic.start();
    await preserveVm(vm, 'vm0');
    const next = await harness.liveUpdate();
    expect(await errnoOf(VfioDevice.open(next, NIC_CDEV))).toBe('EBUSY');
    expect(await errnoOf(VfioDevice.open(next, COPY_CDEV))).toBe('EBUSY');

    const session = await (await LiveUpdateDevice.open(next)).retrieveSession('vm0');
    expect(await errnoOf(session.finish())).toBe('EBUSY');
    const nicFd = await session.retrieveFd(VM_TOKENS.nic);
    const copierFd = await session.retrieveFd(VM_TOKENS.copier);
    // Retrieved but not yet bound: still refused.
    expect(await errnoOf(session.finish())).toBe('EBUSY');
    const nic = VfioDevice.fromFd(next, nicFd);
    // Unbound, a retrieved cdev refuses everything but BIND, like any.
    expect(await errnoOf(nic.readRegister(0))).toBe('EINVAL');
    // It binds only to the iommufd it was preserved with.
    const other = await IommufdDevice.open(next);
    expect(await errnoOf(nic.bindIommufd(other.fd))).toBe('EINVAL');
    await other.close();
    const iommufd = IommufdDevice.fromFd(next, await session.retrieveFd(VM_TOKENS.iommufd));
    await nic.bindIommufd(iommufd.fd);
    // Not reset: the NIC still has its ring and keeps delivering.
    const head = await nic.readRegister(NIC_REG_RX_HEAD);
    expect(head).toBeGreaterThan(0);
    await VfioDevice.fromFd(next, copierFd).bindIommufd(iommufd.fd);
    expect(await errnoOf(session.finish())).toBe('EBUSY'); // the iommufd's HWPT is not restored
    const restoredHwpt = await iommufd.hwptLuRestore(1);
    const ram = await GuestRam.fromFd(next, await session.retrieveFd(VM_TOKENS.memfd));
    const ioas = await iommufd.allocIoas();
    await iommufd.mapFile(ioas, { fd: ram.fd, length: LAYOUT.ramSize, iova: 0 });
    await nic.attach(ioas);
    await VfioDevice.fromFd(next, copierFd).attach(ioas);
    await iommufd.destroy(restoredHwpt);
    await session.finish();
    // Finished: the cdev opens again (and the device stays bound to the retrieved file).
    const reopened = await VfioDevice.open(next, NIC_CDEV);
    expect(await errnoOf(reopened.bindIommufd(iommufd.fd))).toBe('EINVAL');
    await reopened.close();
    expect(harness.machine.counters().faults).toBe(0);
    expect(await nic.readRegister(NIC_REG_RX_HEAD)).toBeGreaterThan(head);
  });
});

describe('VMM ordering mistakes', () => {
  /** A VM ready to be preserved, and the kernel's counts before it was made. */
  async function vmAndBaseline(options: { sealed?: boolean; mark?: boolean } = {}) {
    const harness = await bootVfio({ packetsPerSecond: PACKETS_PER_SECOND });
    const { process } = harness;
    await warmUpIommu(process);
    const before = await testkitStats(process);
    let ram: GuestRam | undefined;
    if (options.sealed === false) {
      const fd = await process.memfdCreate('guest-ram');
      await process.ftruncate(fd, LAYOUT.ramSize);
      ram = await GuestRam.fromFd(process, fd);
    }
    const vm = await createVm(process, LAYOUT, {
      ...(options.mark === false ? {} : { hwptToken: 1 }),
      ...(ram ? { ram } : {}),
    });
    await vm.nic.start();
    await until(async () => (await vm.nic.head()) >= 5, 'packets');
    vm.luo = await LiveUpdateDevice.open(process);
    const session = await vm.luo.createSession('vm0');
    return { harness, process, before, vm, session };
  }

  /** Nothing is left once the session and the VM are closed; the NIC delivered the whole time. */
  async function expectRunningAndClean(
    harness: Awaited<ReturnType<typeof vmAndBaseline>>['harness'],
    vm: Vm,
    before: Awaited<ReturnType<typeof testkitStats>>,
    session: { close(): Promise<void> },
  ): Promise<void> {
    const packets = harness.machine.counters(NIC_BDF).packets;
    await until(() => harness.machine.counters(NIC_BDF).packets > packets + 5, 'packets');
    expect(harness.machine.counters().faults).toBe(0);
    await session.close();
    await vm.luo!.close();
    await vm.nic.device.close();
    await vm.copier.device.close();
    await vm.iommufd.close();
    await vm.process.munmap(vm.ram.mapping);
    await vm.process.close(vm.ram.fd);
    expect(await testkitStats(vm.process)).toEqual(before);
  }

  it('refuses an unsealed guest RAM memfd at the iommufd (EINVAL)', async () => {
    const { harness, before, vm, session } = await vmAndBaseline({ sealed: false });
    await session.preserveFd(vm.ram.fd, VM_TOKENS.memfd);
    expect(await errnoOf(session.preserveFd(vm.iommufd.fd, VM_TOKENS.iommufd))).toBe('EINVAL');
    await expectRunningAndClean(harness, vm, before, session);
  });

  it('refuses the iommufd while guest RAM is not preserved (ENOENT)', async () => {
    const { harness, before, vm, session } = await vmAndBaseline();
    expect(await errnoOf(session.preserveFd(vm.iommufd.fd, VM_TOKENS.iommufd))).toBe('ENOENT');
    await expectRunningAndClean(harness, vm, before, session);
  });

  it('refuses a device whose iommufd is not preserved (ENOENT)', async () => {
    const { harness, before, vm, session } = await vmAndBaseline();
    await session.preserveFd(vm.ram.fd, VM_TOKENS.memfd);
    expect(await errnoOf(session.preserveFd(vm.nic.device.fd, VM_TOKENS.nic))).toBe('ENOENT');
    await expectRunningAndClean(harness, vm, before, session);
  });

  it('refuses a device whose HWPT is not marked for preservation (EINVAL)', async () => {
    const { harness, before, vm, session } = await vmAndBaseline({ mark: false });
    await session.preserveFd(vm.ram.fd, VM_TOKENS.memfd);
    await session.preserveFd(vm.iommufd.fd, VM_TOKENS.iommufd);
    expect(await errnoOf(session.preserveFd(vm.nic.device.fd, VM_TOKENS.nic))).toBe('EINVAL');
    await expectRunningAndClean(harness, vm, before, session);
  });

  it('refuses a device cdev that is not bound to an iommufd (EINVAL)', async () => {
    const harness = await bootVfio();
    const { process } = harness;
    const device = await VfioDevice.open(process, NIC_CDEV);
    const session = await (await LiveUpdateDevice.open(process)).createSession('vm0');
    expect(await errnoOf(session.preserveFd(device.fd, VM_TOKENS.nic))).toBe('EINVAL');
  });

  it('fails the reboot when interrupts are on (EINVAL), rolls back memfd and iommufd, and keeps the devices doing DMA', async () => {
    const { harness, process, vm, session } = await vmAndBaseline();
    await preserveVm(vm, session);
    const eventfd = await process.eventfd(0, 0);
    await vm.nic.device.setMsixEventfd(eventfd);
    const packets = harness.machine.counters(NIC_BDF).packets;
    expect(await errnoOf(harness.liveUpdate())).toBe('EINVAL');
    expect(harness.machine.dmesg()).toMatch(
      /vfio-pci 0000:00:03\.0: Freeze failed! Interrupts are still enabled\./,
    );
    // Still the same kernel and process; the NIC kept delivering into guest RAM and the copy
    // engine still copies.
    expect(harness.machine.bootCount).toBe(1);
    await until(() => harness.machine.counters(NIC_BDF).packets > packets + 20, 'packets');
    vm.ram.write(SOURCE_GPA, source.subarray(0, 4096));
    await vm.copier.start();
    const index = await vm.copier.copy(SOURCE_GPA, DESTINATION_GPA, 4096);
    await until(async () => (await vm.copier.completed()) >= 1, 'a copy');
    expect(vm.copier.completion(index).status).toBe(DMA_COPY_STATUS.SUCCESS);
    expect(harness.machine.counters().faults).toBe(0);
    // Rolled back, not lost: with interrupts off the same session crosses.
    await vm.nic.device.disableInterrupts();
    const next = await harness.liveUpdate();
    const restored = await restoreVm(next, LAYOUT, { sessionName: 'vm0', hwptToken: 1 });
    await restored.nic.stop();
    await expectRingInSequence(harness.machine, restored);
    expect(harness.machine.counters().faults).toBe(0);
  });

  it('refuses FINISH before the devices are retrieved (EBUSY), and the devices keep running', async () => {
    const harness = await bootVfio({ packetsPerSecond: PACKETS_PER_SECOND });
    const vm = await createVm(harness.process, LAYOUT, { hwptToken: 1 });
    await vm.nic.start();
    await preserveVm(vm, 'vm0');
    const next = await harness.liveUpdate();
    const luo = await LiveUpdateDevice.open(next);
    const session = await luo.retrieveSession('vm0');
    await session.retrieveFd(VM_TOKENS.memfd);
    await session.retrieveFd(VM_TOKENS.iommufd);
    expect(await errnoOf(session.finish())).toBe('EBUSY');
    const packets = harness.machine.counters(NIC_BDF).packets;
    await until(() => harness.machine.counters(NIC_BDF).packets > packets + 10, 'packets');
    // Then restored the normal way, and finished.
    await restoreVm(next, LAYOUT, { sessionName: 'vm0', hwptToken: 1, luo, session });
    expect(harness.machine.counters().faults).toBe(0);
  });
});

describe('vfio-pci.reset_on_freeze=1 (what upstream does today)', () => {
  it('resets the devices at freeze: DMA stops for the blackout, the rings and queued copies are lost', async () => {
    let atHandover: { packets: number; copies: number } | undefined;
    const harness = await bootVfio({
      packetsPerSecond: PACKETS_PER_SECOND,
      cmdline: 'vfio-pci.reset_on_freeze=1',
      onHandover: () => {
        atHandover = {
          packets: harness.machine.counters(NIC_BDF).packets,
          copies: harness.machine.counters(COPY_BDF).copies,
        };
      },
    });
    const { machine } = harness;
    const vm = await createVm(harness.process, LAYOUT, { hwptToken: 1 });
    vm.ram.write(SOURCE_GPA, source);
    await vm.copier.start();
    await vm.nic.start();
    await until(async () => (await vm.nic.head()) >= 20, 'packets');
    await preserveVm(vm, 'vm0');
    await vm.copier.queue(
      Array.from({ length: COPY_RING - 1 }, () => ({
        src: SOURCE_GPA,
        dst: DESTINATION_GPA,
        length: DMA_COPY_MAX_LENGTH,
      })),
    );
    const next = await harness.liveUpdate();
    const restored = await restoreVm(next, LAYOUT, { sessionName: 'vm0', hwptToken: 1 });
    await sleep(100);
    // Nothing moved after the freeze: no packet, no copy, and the devices forgot their rings.
    expect(machine.counters(NIC_BDF).packets).toBe(atHandover!.packets);
    expect(machine.counters(COPY_BDF).copies).toBe(atHandover!.copies);
    expect(atHandover!.copies).toBeLessThan(COPY_RING - 1);
    // Reset, with bus mastering and memory decode off.
    expect(await restored.nic.device.readConfig16(PCI_COMMAND)).toBe(PCI_COMMAND_INTX_DISABLE);
    expect(await restored.copier.device.readConfig16(PCI_COMMAND)).toBe(PCI_COMMAND_INTX_DISABLE);
    await restored.nic.device.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY);
    await restored.copier.device.writeConfig16(PCI_COMMAND, PCI_COMMAND_MEMORY);
    expect(await restored.nic.head()).toBe(0);
    expect(await restored.copier.completed()).toBe(0);
    expect(machine.dmesg(0)).toContain(
      'vfio-pci 0000:00:03.0: reset at freeze (vfio-pci.reset_on_freeze)',
    );
    // What was delivered before the freeze is in guest RAM; the VMM must restart the devices.
    const before = restored.nic.packets(atHandover!.packets);
    expect(before.every((p, i) => p.sequence === i && p.checksumOk)).toBe(true);
    await restored.nic.start();
    await until(async () => (await restored.nic.head()) >= 5, 'packets after a restart');
    expect(machine.counters().faults).toBe(0);
  });
});
