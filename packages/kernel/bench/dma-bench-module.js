// The DMA benchmark's kernel module: a `dma_bench` syscall that maps a NIC receive ring and copy
// engine buffers through the kernel's IOMMU driver, programs both devices through their BAR0
// registers (as packages/kernel/test/fixtures/dma-probe.js does) and times their DMA inside the
// kernel with performance.now(). Beside the copy engine it times the baseline: a plain
// memory.view().set() copy of the same bytes in the same kernel. Plain JS because the kernel
// worker imports it directly from this folder.
import { setInterval, clearInterval } from 'node:timers';
import {
  IOMMU_SERVICE,
  KernelError,
  PAGE_SIZE,
  PCI_BUS_SERVICE,
  defineModule,
  getOrder,
} from '@liveupdate/kernel';
import {
  DMA_COPY_COMPLETION_SIZE,
  DMA_COPY_CTRL_ENABLE,
  DMA_COPY_DESC_SIZE,
  DMA_COPY_MAX_LENGTH,
  DMA_COPY_REG_BASE_HI,
  DMA_COPY_REG_BASE_LO,
  DMA_COPY_REG_COMPLETED,
  DMA_COPY_REG_CTRL,
  DMA_COPY_REG_SIZE,
  DMA_COPY_REG_TAIL,
  DMA_COPY_STATUS,
  NIC_PACKET_SIZE,
  NIC_REG_CTRL,
  NIC_REG_RX_DROPS,
  NIC_REG_RX_HEAD,
  NIC_REG_RX_PACKETS,
  NIC_REG_RX_TAIL,
} from '@liveupdate/machine';
import { startNicRing } from '../test/fixtures/nic-ring.js';

export const NIC_BDF = '00:03.0';
export const COPY_BDF = '00:04.0';
const NIC_RING_IOVA = 0x1000_0000;
const NIC_BUFFERS_IOVA = 0x1100_0000;
const COPY_RING_IOVA = 0x2000_0000;
const COPY_COMPLETION_IOVA = 0x2000_1000;
const COPY_SRC_IOVA = 0x2100_0000;
const COPY_DST_IOVA = 0x2200_0000;
const COPY_RING_SIZE = 64;
// One descriptor's longest copy (1 MiB), mapped with 4 KiB leaves: 1 MiB folios are not 2 MiB
// long, so the driver never uses a 2 MiB leaf for them.
const COPY_BYTES = DMA_COPY_MAX_LENGTH;

const tick = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export default defineModule({
  name: 'dma_bench',
  init(ctx) {
    const { memory, pages } = ctx;
    const iommu = ctx.services.get(IOMMU_SERVICE);
    const pci = ctx.services.get(PCI_BUS_SERVICE);
    if (!iommu || !pci) throw new Error('dma_bench needs the IOMMU and PCI services');
    const phys = (folio) => folio.pfn * PAGE_SIZE;
    let nic;
    let copy;

    const ops = {
      // Map a receive ring of `ringSize` descriptors and one packet buffer per descriptor, start
      // receiving, and hand every filled descriptor back each millisecond.
      nicStart({ ringSize }) {
        const dev = pci.find(NIC_BDF);
        const domain = iommu.allocDomain();
        iommu.attachDevice(domain, dev.bdf);
        startNicRing({
          memory,
          pages,
          iommu,
          dev,
          domain,
          ringSize,
          bufferSize: NIC_PACKET_SIZE,
          ringIova: NIC_RING_IOVA,
          buffersIova: NIC_BUFFERS_IOVA,
          interrupts: false,
        });
        const consumer = setInterval(
          () => dev.writeRegister(NIC_REG_RX_TAIL, dev.readRegister(NIC_REG_RX_HEAD)),
          1,
        );
        nic = { dev, consumer };
        return 0;
      },
      // Packets delivered and dropped over `ms` milliseconds of receiving.
      async nicMeasure({ ms }) {
        const { dev } = nic;
        const packets0 = dev.readRegister(NIC_REG_RX_PACKETS);
        const drops0 = dev.readRegister(NIC_REG_RX_DROPS);
        const start = performance.now();
        await sleep(ms);
        const elapsed = performance.now() - start;
        return {
          ms: elapsed,
          packets: dev.readRegister(NIC_REG_RX_PACKETS) - packets0,
          drops: dev.readRegister(NIC_REG_RX_DROPS) - drops0,
        };
      },
      nicStop() {
        nic.dev.writeRegister(NIC_REG_CTRL, 0);
        clearInterval(nic.consumer);
        return 0;
      },
      // `copies` copies of 1 MiB between two mapped buffers, the ring kept full; then the same
      // number of host copies of the same buffers. Milliseconds of each.
      async copyRun({ copies }) {
        if (!copy) {
          const dev = pci.find(COPY_BDF);
          const domain = iommu.allocDomain();
          iommu.attachDevice(domain, dev.bdf);
          const ring = pages.allocPages(getOrder(COPY_RING_SIZE * DMA_COPY_DESC_SIZE), {
            zero: true,
          });
          const completion = pages.allocPages(0, { zero: true });
          const source = pages.allocPages(getOrder(COPY_BYTES));
          const destination = pages.allocPages(getOrder(COPY_BYTES), { zero: true });
          const view = memory.view(phys(source), COPY_BYTES);
          for (let i = 0; i < view.length; i++) view[i] = (i * 7 + 3) & 0xff;
          iommu.map(domain, COPY_RING_IOVA, phys(ring), PAGE_SIZE * 2 ** ring.order, {
            read: true,
          });
          iommu.map(domain, COPY_COMPLETION_IOVA, phys(completion), PAGE_SIZE, { write: true });
          iommu.map(domain, COPY_SRC_IOVA, phys(source), COPY_BYTES, { read: true });
          iommu.map(domain, COPY_DST_IOVA, phys(destination), COPY_BYTES, { write: true });
          for (let slot = 0; slot < COPY_RING_SIZE; slot++) {
            const at = phys(ring) + slot * DMA_COPY_DESC_SIZE;
            memory.writeU64(at, BigInt(COPY_SRC_IOVA));
            memory.writeU64(at + 8, BigInt(COPY_DST_IOVA));
            memory.writeU32(at + 16, COPY_BYTES);
            memory.writeU64(
              at + 24,
              BigInt(COPY_COMPLETION_IOVA + slot * DMA_COPY_COMPLETION_SIZE),
            );
          }
          dev.writeRegister(DMA_COPY_REG_BASE_LO, COPY_RING_IOVA);
          dev.writeRegister(DMA_COPY_REG_BASE_HI, 0);
          dev.writeRegister(DMA_COPY_REG_SIZE, COPY_RING_SIZE);
          dev.writeRegister(DMA_COPY_REG_CTRL, DMA_COPY_CTRL_ENABLE);
          dev.enableDevice();
          dev.setMaster(true);
          copy = { dev, completion, source, destination, queued: 0 };
        }
        const c = copy;
        const done = () => c.dev.readRegister(DMA_COPY_REG_COMPLETED);
        const first = c.queued;
        const target = first + copies;
        const start = performance.now();
        while (done() < target) {
          const room = COPY_RING_SIZE - 1 - (c.queued - done());
          if (room > 0 && c.queued < target) {
            c.queued = Math.min(target, c.queued + room);
            c.dev.writeRegister(DMA_COPY_REG_TAIL, c.queued % COPY_RING_SIZE);
          }
          await tick();
        }
        const ms = performance.now() - start;
        const last = phys(c.completion) + ((target - 1) % COPY_RING_SIZE) * 8;
        const status = memory.readU32(last);
        const source = memory.view(phys(c.source), COPY_BYTES);
        const destination = memory.view(phys(c.destination), COPY_BYTES);
        if (status !== DMA_COPY_STATUS.SUCCESS || destination.some((b, i) => b !== source[i])) {
          throw new KernelError('EIO', `dma_bench: copy failed (status ${status})`);
        }
        const hostStart = performance.now();
        for (let i = 0; i < copies; i++) destination.set(source);
        const hostMs = performance.now() - hostStart;
        return { bytes: copies * COPY_BYTES, ms, hostMs };
      },
    };

    ctx.syscalls.register('dma_bench', (_sys, op, args) => {
      const fn = ops[op];
      if (!fn) throw new KernelError('EINVAL', `dma_bench: unknown op ${String(op)}`);
      return fn(args ?? {});
    });
  },
});
