import { describe, expect, it } from 'vitest';
import {
  EFD_NONBLOCK,
  O_RDWR,
  PCI_COMMAND,
  PCI_COMMAND_MEMORY,
  PCI_VENDOR_ID,
} from '@liveupdate/machine';
import { IommufdDevice } from '@liveupdate/plugin-iommufd';
import {
  VFIO_DEVICE_ATTACH_IOMMUFD_PT,
  VFIO_DEVICE_ATTACH_PASID,
  VFIO_DEVICE_BIND_IOMMUFD,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_SET_IRQS,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_BAR0_REGION_INDEX,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_OFFSET_SHIFT,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  VfioDevice,
  vfioDeviceAttachIommufdPt,
  vfioDeviceBindIommufd,
  vfioDeviceInfo,
  vfioIrqSet,
} from '../src/index.js';
import {
  COPY_CDEV,
  NIC_BDF,
  NIC_CDEV,
  bootVfio,
  errnoOf,
  readEventfd,
  testkitStats,
  warmUpIommu,
} from './helpers.js';
import { GuestNic, GuestRam, MiB, until, vmmMemory } from './vmm.js';

async function opened() {
  const harness = await bootVfio();
  const { process } = harness;
  const before = await testkitStats(process);
  const nic = await VfioDevice.open(process, NIC_CDEV);
  const iommufd = await IommufdDevice.open(process);
  return { harness, process, before, nic, iommufd };
}

function bindArg(value: { argsz?: number; flags?: number; iommufd: number }): Uint8Array {
  return vfioDeviceBindIommufd.encode({
    argsz: value.argsz ?? vfioDeviceBindIommufd.size,
    flags: value.flags ?? 0,
    iommufd: value.iommufd,
    out_devid: 0,
  });
}

function irqSet(flags: number, index: number, start: number, count: number, data: number[] = []) {
  const elementSize =
    flags & VFIO_IRQ_SET_DATA_EVENTFD ? 4 : flags & VFIO_IRQ_SET_DATA_BOOL ? 1 : 0;
  const arg = new Uint8Array(20 + data.length * elementSize);
  vfioIrqSet.encodeInto(arg, 0, { argsz: arg.length, flags, index, start, count });
  const view = new DataView(arg.buffer);
  data.forEach((v, i) =>
    elementSize === 4 ? view.setInt32(20 + 4 * i, v, true) : view.setUint8(20 + i, v),
  );
  return arg;
}

describe('vfio device cdevs', () => {
  it('gives each passthrough device a cdev in bus order and refuses everything until bound', async () => {
    const { process, nic, iommufd } = await opened();
    const copy = await VfioDevice.open(process, COPY_CDEV);
    expect(await errnoOf(process.open('/dev/vfio/devices/vfio2', O_RDWR))).toBe('ENOENT');
    expect(await errnoOf(nic.info())).toBe('EINVAL');
    expect(await errnoOf(nic.attach(1))).toBe('EINVAL');
    expect(await errnoOf(nic.readRegister(0))).toBe('EINVAL');
    expect(await errnoOf(nic.writeConfig16(PCI_COMMAND, 0))).toBe('EINVAL');
    expect(await errnoOf(nic.reset())).toBe('EINVAL');
    expect(await nic.bindIommufd(iommufd.fd)).toBe(1);
    expect(await copy.bindIommufd(iommufd.fd)).toBe(2);
    expect(await nic.readConfig16(PCI_VENDOR_ID)).toBe(0x8086);
    expect(await errnoOf(process.ioctl(nic.fd, 0x3b00 + 99))).toBe('ENOTTY');
  });

  it('validates VFIO_DEVICE_BIND_IOMMUFD as upstream', async () => {
    const { process, nic, iommufd } = await opened();
    const memfd = await process.memfdCreate('not-iommufd');
    const bind = (arg: Uint8Array) => process.ioctl(nic.fd, VFIO_DEVICE_BIND_IOMMUFD, arg);
    expect(await errnoOf(bind(bindArg({ argsz: 12, iommufd: iommufd.fd })))).toBe('EINVAL');
    expect(await errnoOf(bind(bindArg({ flags: 1, iommufd: iommufd.fd })))).toBe('EINVAL');
    expect(await errnoOf(bind(bindArg({ iommufd: -1 })))).toBe('EINVAL');
    expect(await errnoOf(bind(bindArg({ iommufd: 99 })))).toBe('EBADF');
    expect(await errnoOf(bind(bindArg({ iommufd: memfd })))).toBe('EBADFD');
    expect(await errnoOf(process.ioctl(nic.fd, VFIO_DEVICE_BIND_IOMMUFD))).toBe('EFAULT');
    // A larger argsz with trailing bytes is accepted: vfio reads only what it knows.
    const big = new Uint8Array(24);
    big.set(bindArg({ argsz: 24, iommufd: iommufd.fd }));
    big[20] = 0xff;
    await process.ioctl(nic.fd, VFIO_DEVICE_BIND_IOMMUFD, big);
    expect(vfioDeviceBindIommufd.decode(big).out_devid).toBe(1);
    expect(await errnoOf(nic.bindIommufd(iommufd.fd))).toBe('EINVAL');
    // A second open of the same device cannot bind it while the first has it.
    const other = await VfioDevice.open(process, NIC_CDEV);
    expect(await errnoOf(other.bindIommufd(iommufd.fd))).toBe('EINVAL');
    // Nor can another iommufd take the device.
    const second = await IommufdDevice.open(process);
    expect(await errnoOf(other.bindIommufd(second.fd))).toBe('EINVAL');
  });

  it('attaches to an IOAS or a HWPT, replaces, detaches, and refuses bad ids and flags', async () => {
    const { process, nic, iommufd } = await opened();
    const devId = await nic.bindIommufd(iommufd.fd);
    const ioas = await iommufd.allocIoas();
    expect(await errnoOf(nic.attach(77))).toBe('ENOENT');
    expect(await errnoOf(nic.attach(devId))).toBe('EINVAL');
    const attach = (flags: number) =>
      process.ioctl(
        nic.fd,
        VFIO_DEVICE_ATTACH_IOMMUFD_PT,
        vfioDeviceAttachIommufdPt.encode({ argsz: 16, flags, pt_id: ioas, pasid: 0 }),
      );
    expect(await errnoOf(attach(VFIO_DEVICE_ATTACH_PASID))).toBe('EOPNOTSUPP');
    expect(await errnoOf(attach(4))).toBe('EINVAL');
    const auto = await nic.attach(ioas);
    expect(auto).not.toBe(ioas);
    // Attaching again to the same IOAS keeps the same automatic HWPT.
    expect(await nic.attach(ioas)).toBe(auto);
    const hwpt = await iommufd.hwptAlloc(devId, ioas);
    expect(await nic.attach(hwpt)).toBe(hwpt);
    await nic.detach();
    await nic.detach();
    expect(await errnoOf(iommufd.destroy(devId))).toBe('EBUSY');
    await iommufd.destroy(hwpt);
  });

  it('describes the device, its regions and its interrupts', async () => {
    const { nic, iommufd } = await opened();
    await nic.bindIommufd(iommufd.fd);
    expect(await nic.info()).toEqual({
      flags: VFIO_DEVICE_FLAGS_RESET | VFIO_DEVICE_FLAGS_PCI,
      numRegions: VFIO_PCI_NUM_REGIONS,
      numIrqs: VFIO_PCI_NUM_IRQS,
    });
    const rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    expect(await nic.regionInfo(VFIO_PCI_BAR0_REGION_INDEX)).toEqual({
      flags: rw,
      size: 4096,
      offset: 0,
    });
    expect(await nic.regionInfo(VFIO_PCI_CONFIG_REGION_INDEX)).toEqual({
      flags: rw,
      size: 256,
      offset: VFIO_PCI_CONFIG_REGION_INDEX * 2 ** VFIO_PCI_OFFSET_SHIFT,
    });
    expect(await nic.regionInfo(1)).toEqual({
      flags: 0,
      size: 0,
      offset: 2 ** VFIO_PCI_OFFSET_SHIFT,
    });
    expect(await errnoOf(nic.regionInfo(VFIO_PCI_NUM_REGIONS))).toBe('EINVAL');
    expect(await nic.irqInfo(VFIO_PCI_MSIX_IRQ_INDEX)).toEqual({
      flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE,
      count: 1,
    });
    expect(await nic.irqInfo(VFIO_PCI_INTX_IRQ_INDEX)).toEqual({ flags: 0, count: 0 });
    expect(await errnoOf(nic.irqInfo(VFIO_PCI_NUM_IRQS))).toBe('EINVAL');
    const small = vfioDeviceInfo.encode({
      argsz: 12,
      flags: 0,
      num_regions: 0,
      num_irqs: 0,
      cap_offset: 0,
      pad: 0,
    });
    expect(await errnoOf(nic.process.ioctl(nic.fd, VFIO_DEVICE_GET_INFO, small))).toBe('EINVAL');
  });

  it('checks every region access: bounds, alignment, memory decode', async () => {
    const { process, nic, iommufd } = await opened();
    await nic.bindIommufd(iommufd.fd);
    const bar = VFIO_PCI_BAR0_REGION_INDEX * 2 ** VFIO_PCI_OFFSET_SHIFT;
    const config = VFIO_PCI_CONFIG_REGION_INDEX * 2 ** VFIO_PCI_OFFSET_SHIFT;
    expect(await errnoOf(process.pread(nic.fd, 4, bar + 2))).toBe('EINVAL');
    expect(await errnoOf(process.pread(nic.fd, 3, bar))).toBe('EINVAL');
    expect(await errnoOf(process.pread(nic.fd, 8, bar + 4092))).toBe('EINVAL');
    expect(await errnoOf(process.pread(nic.fd, 4, 2 ** VFIO_PCI_OFFSET_SHIFT))).toBe('EINVAL');
    expect(await errnoOf(process.pread(nic.fd, 2, config + 255))).toBe('EINVAL');
    // Opening turned memory decode on; without it the BAR does not respond.
    expect((await nic.readConfig16(PCI_COMMAND)) & PCI_COMMAND_MEMORY).toBe(PCI_COMMAND_MEMORY);
    await nic.writeConfig16(PCI_COMMAND, 0);
    expect(await errnoOf(nic.readRegister(0))).toBe('EIO');
    // Config space reads byte by byte agree with the 16-bit field.
    const bytes = await process.pread(nic.fd, 3, config + PCI_VENDOR_ID);
    expect(bytes[0]! | (bytes[1]! << 8)).toBe(await nic.readConfig16(PCI_VENDOR_ID));
  });

  it('validates VFIO_DEVICE_SET_IRQS as upstream', async () => {
    const { process, nic, iommufd } = await opened();
    await nic.bindIommufd(iommufd.fd);
    const set = (arg: Uint8Array) => process.ioctl(nic.fd, VFIO_DEVICE_SET_IRQS, arg);
    const trigger = VFIO_IRQ_SET_ACTION_TRIGGER;
    const msix = VFIO_PCI_MSIX_IRQ_INDEX;
    expect(await errnoOf(set(irqSet(trigger, msix, 0, 0)))).toBe('EINVAL');
    expect(
      await errnoOf(
        set(irqSet(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | trigger, msix, 0, 0)),
      ),
    ).toBe('EINVAL');
    expect(await errnoOf(set(irqSet(VFIO_IRQ_SET_DATA_NONE | trigger | 0x100, msix, 0, 0)))).toBe(
      'EINVAL',
    );
    expect(await errnoOf(set(irqSet(VFIO_IRQ_SET_DATA_NONE | trigger, 9, 0, 0)))).toBe('EINVAL');
    expect(
      await errnoOf(set(irqSet(VFIO_IRQ_SET_DATA_NONE | trigger, VFIO_PCI_INTX_IRQ_INDEX, 0, 0))),
    ).toBe('EINVAL');
    expect(await errnoOf(set(irqSet(VFIO_IRQ_SET_DATA_NONE | trigger, msix, 1, 1)))).toBe('EINVAL');
    expect(await errnoOf(set(irqSet(VFIO_IRQ_SET_DATA_NONE | trigger, msix, 0, 2)))).toBe('EINVAL');
    // argsz without room for the eventfd.
    expect(await errnoOf(set(irqSet(VFIO_IRQ_SET_DATA_EVENTFD | trigger, msix, 0, 1)))).toBe(
      'EINVAL',
    );
    expect(
      await errnoOf(set(irqSet(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK, msix, 0, 1))),
    ).toBe('ENOTTY');
    const memfd = await process.memfdCreate('not-an-eventfd');
    expect(await errnoOf(nic.setMsixEventfd(memfd))).toBe('EINVAL');
    expect(await errnoOf(nic.setMsixEventfd(99))).toBe('EBADF');
    await nic.disableInterrupts();
  });

  it('signals an eventfd for the device interrupts, and stops once they are disabled', async () => {
    const harness = await bootVfio({ packetsPerSecond: 2000 });
    const { process } = harness;
    const { iommufd, ioas, ram } = await vmmMemory(process, 4 * MiB);
    const nic = await VfioDevice.open(process, NIC_CDEV);
    await nic.bindIommufd(iommufd.fd);
    await nic.attach(ioas);
    const efd = await process.eventfd(0, EFD_NONBLOCK);
    // Software trigger first: one event.
    await nic.setMsixEventfd(efd);
    await process.ioctl(
      nic.fd,
      VFIO_DEVICE_SET_IRQS,
      irqSet(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1),
    );
    expect(await readEventfd(process, efd)).toBe(1);
    const guest = new GuestNic(nic, ram, { ringGpa: 0x1000, buffersGpa: 0x10_0000, ringSize: 64 });
    await guest.start({ interrupts: true });
    let received = 0;
    await until(async () => {
      received += await readEventfd(process, efd);
      return received >= 10;
    }, '10 interrupts');
    // Receive off: once the device is quiet, every interrupt it raised has been read.
    await guest.stop();
    await until(async () => {
      received += await readEventfd(process, efd);
      return received === harness.machine.counters(NIC_BDF).interrupts;
    }, 'the eventfd to catch up with the device');
    // Interrupts off: the NIC receives again with its interrupt bit set, and nothing is raised.
    await nic.disableInterrupts();
    const raised = harness.machine.counters(NIC_BDF).interrupts;
    const packets = harness.machine.counters(NIC_BDF).packets;
    await guest.start({ interrupts: true });
    await until(() => harness.machine.counters(NIC_BDF).packets > packets + 5, 'more packets');
    expect(harness.machine.counters(NIC_BDF).interrupts).toBe(raised);
    expect(await readEventfd(process, efd)).toBe(0);
    await guest.stop();
  });

  it('leaks nothing whatever the order the VMM closes its files in', async () => {
    const orders = [
      ['iommufd', 'nic', 'memfd', 'map'],
      ['memfd', 'map', 'iommufd', 'nic'],
      ['nic', 'map', 'iommufd', 'memfd'],
    ] as const;
    const harness = await bootVfio();
    const { process } = harness;
    await warmUpIommu(process);
    const before = await testkitStats(process);
    for (const order of orders) {
      const { iommufd, ioas, ram } = await vmmMemory(process, 2 * MiB);
      const nic = await VfioDevice.open(process, NIC_CDEV);
      await nic.bindIommufd(iommufd.fd);
      await nic.attach(ioas);
      const close = {
        iommufd: () => iommufd.close(),
        nic: () => nic.close(),
        memfd: () => process.close(ram.fd),
        map: () => process.munmap(ram.mapping),
      };
      for (const step of order) await close[step]();
      expect(await testkitStats(process), order.join(' → ')).toEqual(before);
    }
  });

  it('refuses to map anything but a memfd, and overlapping ranges', async () => {
    const harness = await bootVfio();
    const { process } = harness;
    const ram = await GuestRam.create(process, 2 * MiB);
    const iommufd = await IommufdDevice.open(process);
    const ioas = await iommufd.allocIoas();
    const nic = await VfioDevice.open(process, NIC_CDEV);
    expect(await errnoOf(iommufd.mapFile(ioas, { fd: nic.fd, length: 4096, iova: 0 }))).toBe(
      'EINVAL',
    );
    await iommufd.mapFile(ioas, { fd: ram.fd, length: 2 * MiB, iova: 0 });
    expect(await errnoOf(iommufd.mapFile(ioas, { fd: ram.fd, length: 4096, iova: MiB }))).toBe(
      'EEXIST',
    );
  });
});
