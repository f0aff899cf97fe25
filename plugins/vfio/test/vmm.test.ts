import { describe, expect, it } from 'vitest';
import { DMA_COPY_STATUS, NIC_REG_RX_TAIL } from '@liveupdate/machine';
import { IOMMU_IOAS_MAP_READABLE } from '@liveupdate/plugin-iommufd';
import { VfioDevice } from '../src/index.js';
import {
  COPY_BDF,
  COPY_CDEV,
  NIC_BDF,
  NIC_CDEV,
  POISON,
  bootVfio,
  testkitStats,
  warmUpIommu,
} from './helpers.js';
import { GuestCopyEngine, GuestNic, MiB, sleep, until, vmmMemory } from './vmm.js';

const RING_GPA = 0x1000;
const BUFFERS_GPA = 0x10_0000;
const COPY_RING_GPA = 0x2000;
const COMPLETIONS_GPA = 0x3000;

/** A VMM with 4 MiB of guest RAM mapped at IOVA 0 and both devices bound and attached to it. */
async function vmm(options: { packetsPerSecond?: number } = {}) {
  const harness = await bootVfio(options);
  const { process } = harness;
  await warmUpIommu(process);
  const before = await testkitStats(process);
  const { iommufd, ioas, ram } = await vmmMemory(process, 4 * MiB);
  const nicDevice = await VfioDevice.open(process, NIC_CDEV);
  const copyDevice = await VfioDevice.open(process, COPY_CDEV);
  for (const device of [nicDevice, copyDevice]) {
    await device.bindIommufd(iommufd.fd);
    await device.attach(ioas);
  }
  const nic = new GuestNic(nicDevice, ram, {
    ringGpa: RING_GPA,
    buffersGpa: BUFFERS_GPA,
    ringSize: 128,
  });
  const copier = new GuestCopyEngine(copyDevice, ram, {
    ringGpa: COPY_RING_GPA,
    completionsGpa: COMPLETIONS_GPA,
    ringSize: 16,
  });
  return { harness, process, before, iommufd, ioas, ram, nic, copier };
}

describe('a VMM passing a NIC and a copy engine through to guest RAM', () => {
  it('receives every packet intact, in sequence, at the guest-physical place of its descriptor', async () => {
    const { harness, nic } = await vmm();
    await nic.start();
    await until(async () => (await nic.head()) >= 40, '40 packets');
    await nic.stop();
    const head = await nic.head();
    const packets = nic.packets(head);
    expect(packets.every((p) => p.checksumOk && p.length === 64)).toBe(true);
    const first = packets[0]!.sequence;
    expect(packets.map((p) => p.sequence)).toEqual(packets.map((_, i) => first + i));
    // Nothing past the head was written: those descriptors are still not done.
    expect(nic.packets(head + 1)[head]!.sequence).toBe(-1);
    expect(harness.machine.counters(NIC_BDF).faults).toBe(0);
  });

  it('has the copy engine copy exactly the bytes asked for, across a page boundary', async () => {
    const { harness, ram, copier } = await vmm();
    const source = Uint8Array.from({ length: 6000 }, (_, i) => (i * 13 + 5) & 0xff);
    ram.write(0x20_0000, source);
    ram.write(0x30_0000, new Uint8Array(8192).fill(0x11));
    await copier.start();
    const index = await copier.copy(0x20_0000 + 100, 0x30_0000 + 3000, 5000);
    await until(async () => (await copier.completed()) >= 1, 'the copy');
    expect(copier.completion(index)).toEqual({ status: DMA_COPY_STATUS.SUCCESS, copied: 5000 });
    const after = ram.read(0x30_0000, 8192);
    expect(after.subarray(3000, 8000)).toEqual(source.subarray(100, 5100));
    expect(after.subarray(0, 3000).every((b) => b === 0x11)).toBe(true);
    expect(after.subarray(8000).every((b) => b === 0x11)).toBe(true);
    expect(harness.machine.counters(COPY_BDF).faults).toBe(0);
  });

  it('faults a copy to an IOVA outside the mapping and writes nothing', async () => {
    const { harness, ram, copier } = await vmm();
    ram.write(0x20_0000, new Uint8Array(4096).fill(0x42));
    await copier.start();
    const index = await copier.copy(0x20_0000, 8 * MiB, 4096);
    await until(async () => (await copier.completed()) >= 1, 'the copy');
    expect(copier.completion(index).status).toBe(DMA_COPY_STATUS.FAULT);
    expect(harness.machine.counters(COPY_BDF).faults).toBeGreaterThan(0);
    const faults = harness.machine.hardware.iommu.faults();
    expect(faults.at(-1)).toMatchObject({ iova: 8 * MiB, reason: 'PTE_NOT_PRESENT', write: true });
  });

  it('enforces a read-only mapping: the device reads it but cannot write it', async () => {
    const { harness, process, iommufd, ioas, copier } = await vmm();
    const readOnly = await process.memfdCreate('rom');
    await process.ftruncate(readOnly, 64 * 1024);
    await process.pwrite(readOnly, new Uint8Array(4096).fill(0x77), 0);
    await iommufd.mapFile(ioas, {
      fd: readOnly,
      length: 64 * 1024,
      iova: 16 * MiB,
      prot: IOMMU_IOAS_MAP_READABLE,
    });
    await copier.start();
    const read = await copier.copy(16 * MiB, 0x30_0000, 4096);
    const write = await copier.copy(0x30_0000, 16 * MiB + 8192, 4096);
    await until(async () => (await copier.completed()) >= 2, 'the copies');
    expect(copier.completion(read).status).toBe(DMA_COPY_STATUS.SUCCESS);
    expect(copier.completion(write).status).toBe(DMA_COPY_STATUS.FAULT);
    expect(harness.machine.hardware.iommu.faults().at(-1)).toMatchObject({
      reason: 'WRITE_DENIED',
    });
    expect((await process.pread(readOnly, 4096, 8192)).every((b) => b === 0)).toBe(true);
  });

  it('stops the NIC writing into a range as soon as the unmap returns', async () => {
    const { harness, process, iommufd, ioas, ram, nic } = await vmm({ packetsPerSecond: 4000 });
    // Guest RAM is one mapping; move the packet buffers into a second one that can go alone.
    const buffers = await process.memfdCreate('buffers');
    await process.ftruncate(buffers, 2 * MiB);
    const buffersMapping = await process.mmap(buffers, 2 * MiB);
    await iommufd.mapFile(ioas, { fd: buffers, length: 2 * MiB, iova: 8 * MiB });
    const moved = new GuestNic(nic.device, ram, {
      ringGpa: RING_GPA,
      buffersGpa: 8 * MiB,
      ringSize: 128,
    });
    await moved.start();
    // Keep the ring from filling: the guest consumes by moving the tail behind the head.
    let consuming = true;
    const consumer = (async () => {
      while (consuming) {
        const head = await moved.head();
        await moved.device.writeRegister(NIC_REG_RX_TAIL, (head + 127) % 128);
        await sleep(2);
      }
    })();
    try {
      await until(() => harness.machine.counters(NIC_BDF).packets > 200, '200 packets');
      await iommufd.unmap(ioas, 8 * MiB, 2 * MiB);
      const snapshot = Buffer.concat(buffersMapping.segments.map((s) => s.bytes));
      const faults = harness.machine.counters(NIC_BDF).faults;
      await until(() => harness.machine.counters(NIC_BDF).faults > faults + 20, 'faults');
      // The NIC was writing a packet every 250 µs; after the unmap not one byte changed.
      expect(Buffer.concat(buffersMapping.segments.map((s) => s.bytes)).equals(snapshot)).toBe(
        true,
      );
    } finally {
      consuming = false;
      await consumer;
    }
  });

  it('resets the devices at a plain kexec: no DMA after it, and freed guest RAM stays poisoned', async () => {
    const { harness, ram, nic, copier } = await vmm();
    await nic.start();
    await copier.start();
    await until(async () => (await nic.head()) >= 10, 'packets');
    const frames = ram.slices(0, 4 * MiB);
    const next = await harness.liveUpdate();
    const ops = harness.machine.counters().dmaOps;
    await sleep(100);
    expect(harness.machine.counters().dmaOps).toBe(ops);
    expect(frames.every((bytes) => bytes.every((b) => b === POISON))).toBe(true);
    for (const fn of harness.machine.hardware.functions) expect(fn.busMaster).toBe(false);
    expect(next.pid).toBeGreaterThan(0);
  });

  it('resets the device on open and on VFIO_DEVICE_RESET, and when the VMM closes it', async () => {
    const { harness, nic } = await vmm();
    await nic.start();
    await until(async () => (await nic.head()) >= 5, 'packets');
    await nic.device.reset();
    const fn = harness.machine.hardware.function(NIC_BDF);
    // The function forgot its ring, kept its configuration.
    expect(await nic.head()).toBe(0);
    expect(fn.busMaster).toBe(true);
    await nic.start();
    await until(async () => (await nic.head()) >= 5, 'packets after the reset');
    await nic.device.close();
    expect(fn.busMaster).toBe(false);
    const packets = harness.machine.counters(NIC_BDF).packets;
    await sleep(50);
    expect(harness.machine.counters(NIC_BDF).packets).toBe(packets);
  });

  it('tears everything down when the VMM closes its files, leaving nothing behind', async () => {
    const { process, before, iommufd, ram, nic, copier } = await vmm();
    await nic.start();
    await copier.start();
    await until(async () => (await nic.head()) >= 5, 'packets');
    await nic.device.close();
    await copier.device.close();
    await iommufd.close();
    await process.munmap(ram.mapping);
    await process.close(ram.fd);
    expect(await testkitStats(process)).toEqual(before);
  });
});
