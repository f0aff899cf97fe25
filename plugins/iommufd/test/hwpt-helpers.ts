import { afterEach } from 'vitest';
import { O_RDWR, parseBdf, type Process } from '@liveupdate/machine';
import {
  bootForLiveUpdate,
  type BootForLiveUpdateOptions,
  type LiveUpdateHarness,
} from '@liveupdate/testkit';
import { IOMMU_HWPT_ALLOC, iommuHwptAlloc } from '../src/index.js';
import { KiB, argOf, mapFile } from './helpers.js';

// Mirrors of fixtures/iommufd-test-device.js (a kernel worker cannot load TypeScript).
const TEST_DEVICE_PATH = '/dev/iommufd-test';
const TEST_BIND = 0x7401;
const TEST_ATTACH = 0x7402;
const TEST_DETACH = 0x7403;
const TEST_UNBIND = 0x7404;
const TEST_STATE = 0x7405;
const TEST_IOVA_TO_PHYS = 0x7406;
const TEST_COPY = 0x7407;
const TEST_LU_PRESERVE = 0x7408;
const TEST_LU_UNPRESERVE = 0x7409;
const TEST_FAULTS = 0x740a;
const TEST_LU_LONE_DOMAIN = 0x740b;

/** The fixture module that binds PCI devices to an iommufd from inside the kernel. */
export const TEST_DEVICE_MODULE = new URL('./fixtures/iommufd-test-device.js', import.meta.url)
  .href;
export const NIC = '00:03.0';
export const COPY_ENGINE = '00:04.0';
export const PAGE = 4 * KiB;

const harnesses: LiveUpdateHarness[] = [];
afterEach(async () => {
  await Promise.all(harnesses.splice(0).map((h) => h.shutdown()));
});

/** A kernel with memfd, iommufd and the test device module, on a machine with a NIC and a copy engine. */
export async function bootWithDevices(
  onHandover?: BootForLiveUpdateOptions['onHandover'],
): Promise<LiveUpdateHarness> {
  const harness = await bootForLiveUpdate({
    modules: ['@liveupdate/plugin-memfd', '@liveupdate/plugin-iommufd', TEST_DEVICE_MODULE],
    moduleBase: import.meta.url,
    ...(onHandover ? { onHandover } : {}),
    devices: [
      { kind: 'nic', bdf: NIC },
      { kind: 'dma-copy', bdf: COPY_ENGINE },
    ],
  });
  harnesses.push(harness);
  return harness;
}

/** What the kernel says of a test device. */
export interface TestDeviceState {
  /** 0 when unbound. */
  readonly devId: number;
  /** 0 when not attached. */
  readonly hwptId: number;
  /** The IOMMU domain the device's context entry points at, 0 for none. */
  readonly domainId: number;
  /** IOMMU domains in use in the whole kernel. */
  readonly domains: number;
}

/** The outcome of one copy, read back from its completion record (all zero: never written). */
export interface CopyResult {
  readonly status: number;
  readonly copied: number;
}

/**
 * A DMA ring in guest memory: the copy engine's descriptor ring at page 0 of `memfd`, its
 * completion records at page 1, the memfd mapped at `iova` in some IOAS.
 */
export interface GuestRing {
  readonly memfd: number;
  readonly iova: number;
}

export const RING_SIZE = 16;
const DESC_SIZE = 32;
const COMPLETION_SIZE = 8;

/** `/dev/iommufd-test`, opened: one device binding, like a vfio device fd. */
export class TestDevice {
  readonly process: Process;
  readonly fd: number;
  #copies = 0;

  private constructor(process: Process, fd: number, copies: number) {
    this.process = process;
    this.fd = fd;
    this.#copies = copies;
  }

  /**
   * Open the test device. `copiesDone`: descriptors the copy engine already completed (in a
   * previous kernel), so this client writes the next descriptor where the engine will look.
   */
  static async open(process: Process, copiesDone = 0): Promise<TestDevice> {
    return new TestDevice(process, await process.open(TEST_DEVICE_PATH, O_RDWR), copiesDone);
  }

  /** Copies made through this device so far (with the `copiesDone` it was opened with). */
  get copies(): number {
    return this.#copies;
  }

  /** `iommufdDeviceBind(file of iommufdFd, pci.find(bdf))`: the device object's id. */
  async bind(iommufdFd: number, bdf: string): Promise<number> {
    const arg = new Uint8Array(12);
    const view = new DataView(arg.buffer);
    view.setInt32(0, iommufdFd, true);
    view.setUint32(4, parseBdf(bdf), true);
    await this.process.ioctl(this.fd, TEST_BIND, arg);
    return view.getUint32(8, true);
  }

  /** `attach(ptId)`: the HWPT id in use. */
  async attach(ptId: number): Promise<number> {
    const arg = new Uint8Array(8);
    const view = new DataView(arg.buffer);
    view.setUint32(0, ptId, true);
    await this.process.ioctl(this.fd, TEST_ATTACH, arg);
    return view.getUint32(4, true);
  }

  async detach(): Promise<void> {
    await this.process.ioctl(this.fd, TEST_DETACH);
  }

  async unbind(): Promise<void> {
    await this.process.ioctl(this.fd, TEST_UNBIND);
  }

  async state(): Promise<TestDeviceState> {
    const arg = new Uint8Array(16);
    await this.process.ioctl(this.fd, TEST_STATE, arg);
    const view = new DataView(arg.buffer);
    return {
      devId: view.getUint32(0, true),
      hwptId: view.getUint32(4, true),
      domainId: view.getUint32(8, true),
      domains: view.getUint32(12, true),
    };
  }

  /** The physical address the IOMMU translates `iova` to for this device, or `null`. */
  async iovaToPhys(iova: number): Promise<number | null> {
    const arg = new Uint8Array(16);
    const view = new DataView(arg.buffer);
    view.setBigUint64(0, BigInt(iova), true);
    await this.process.ioctl(this.fd, TEST_IOVA_TO_PHYS, arg);
    const phys = view.getBigUint64(8, true);
    return phys === 0xffff_ffff_ffff_ffffn ? null : Number(phys);
  }

  /**
   * Have the copy engine copy `length` bytes from IOVA `src` to IOVA `dst`. The descriptor is
   * written into `ring.memfd` (and each of `alsoWriteTo`), so the device finds it only if its
   * domain maps that memfd at `ring.iova`.
   */
  async copy(
    ring: GuestRing,
    src: number,
    dst: number,
    length: number,
    alsoWriteTo: readonly number[] = [],
  ): Promise<CopyResult> {
    const slot = this.#copies % RING_SIZE;
    const descriptor = new Uint8Array(DESC_SIZE);
    const view = new DataView(descriptor.buffer);
    view.setBigUint64(0, BigInt(src), true);
    view.setBigUint64(8, BigInt(dst), true);
    view.setUint32(16, length, true);
    view.setBigUint64(24, BigInt(ring.iova + PAGE + slot * COMPLETION_SIZE), true);
    for (const memfd of [ring.memfd, ...alsoWriteTo]) {
      await this.process.pwrite(memfd, descriptor, slot * DESC_SIZE);
      await this.process.pwrite(
        memfd,
        new Uint8Array(COMPLETION_SIZE),
        PAGE + slot * COMPLETION_SIZE,
      );
    }
    const arg = new Uint8Array(16);
    new DataView(arg.buffer).setBigUint64(0, BigInt(ring.iova), true);
    new DataView(arg.buffer).setUint32(8, RING_SIZE, true);
    await this.process.ioctl(this.fd, TEST_COPY, arg);
    this.#copies++;
    const record = await this.process.pread(
      ring.memfd,
      COMPLETION_SIZE,
      PAGE + slot * COMPLETION_SIZE,
    );
    const recordView = new DataView(record.buffer, record.byteOffset);
    return { status: recordView.getUint32(0, true), copied: recordView.getUint32(4, true) };
  }

  /**
   * Preserve the bound device (IOMMU and PCI) on its attached HWPT, which must be marked; as
   * vfio-pci-v1 would. Returns the HWPT's token.
   */
  async luPreserve(): Promise<number> {
    const arg = new Uint8Array(4);
    await this.process.ioctl(this.fd, TEST_LU_PRESERVE, arg);
    return new DataView(arg.buffer).getUint32(0, true);
  }

  /** Undo {@link luPreserve}. */
  async luUnpreserve(): Promise<void> {
    await this.process.ioctl(this.fd, TEST_LU_UNPRESERVE);
  }

  /** A new, empty IOMMU domain preserved on its own (no iommufd names it); returns its id. */
  async luLoneDomain(): Promise<number> {
    const arg = new Uint8Array(4);
    await this.process.ioctl(this.fd, TEST_LU_LONE_DOMAIN, arg);
    return new DataView(arg.buffer).getUint32(0, true);
  }

  /** Faults in the IOMMU's fault log. */
  async faults(): Promise<number> {
    const arg = new Uint8Array(4);
    await this.process.ioctl(this.fd, TEST_FAULTS, arg);
    return new DataView(arg.buffer).getUint32(0, true);
  }

  async close(): Promise<void> {
    await this.process.close(this.fd);
  }
}

/** Fields of an `IOMMU_HWPT_ALLOC`; what is left out is 0. */
export interface HwptAllocFields {
  readonly dev_id: number;
  readonly pt_id: number;
  readonly flags?: number;
  readonly __reserved?: number;
  readonly data_type?: number;
  readonly data_len?: number;
  readonly __reserved2?: number;
}

/** `IOMMU_HWPT_ALLOC` through the raw ioctl: the new HWPT's id. */
export async function hwptAlloc(
  process: Process,
  fd: number,
  fields: HwptAllocFields,
): Promise<number> {
  const arg = argOf(iommuHwptAlloc, {
    flags: 0,
    out_hwpt_id: 0,
    __reserved: 0,
    data_type: 0,
    data_len: 0,
    data_uptr: 0n,
    fault_id: 0,
    __reserved2: 0,
    ...fields,
  });
  await process.ioctl(fd, IOMMU_HWPT_ALLOC, arg);
  return iommuHwptAlloc.decode(arg).out_hwpt_id;
}

/** A 64 KiB memfd with a ring at page 0, completions at page 1, mapped read-write at `iova`. */
export async function guestRing(
  process: Process,
  iommufd: number,
  ioasId: number,
  iova: number,
): Promise<GuestRing> {
  const memfd = await process.memfdCreate('guest-ram');
  await process.ftruncate(memfd, 16 * PAGE);
  await mapFile(process, iommufd, { ioasId, fd: memfd, length: 16 * PAGE, iova });
  return { memfd, iova };
}

/** `length` bytes of a recognisable pattern starting at `seed`. */
export function pattern(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);
}
