import { describe, expect, it } from 'vitest';
import { until } from '@liveupdate/vitest-config/wait-until';
import {
  DMA_COPY_STATUS,
  NIC_PACKET_SIZE,
  parseBdf,
  type IommuFault,
  type Machine,
  type MachineOptions,
  type Process,
} from '@liveupdate/machine';
import { DMA_PROBE, PROBE, bootedMachine, kexec, testImage } from './helpers.js';

const NIC = '00:03.0';
const COPY = '00:04.0';
const POISON = 0xaa;

/** Byte `i` of the copy engine's source buffer, as `fixtures/dma-probe.js` fills it. */
const sourceByte = (i: number): number => (i * 7 + 3) & 0xff;

interface Frames {
  frames: { phys: number; length: number }[];
}
interface Ring {
  head: number;
  drops: number;
  packets: { done: boolean; length: number; sequence: number; checksumOk: boolean }[];
}
interface Copied {
  status: number;
  copied: number;
  dstIova: number;
  destination: Uint8Array;
}

const devices = (packetsPerSecond = 2000): MachineOptions => ({
  devices: [
    { kind: 'nic', bdf: NIC, packetsPerSecond },
    { kind: 'dma-copy', bdf: COPY },
  ],
});

function dmaImage(version: string) {
  return testImage(version, { modules: [PROBE, DMA_PROBE] });
}

function dma<T>(process: Process, op: string, args: object = {}): Promise<T> {
  return process.syscall('dma_probe', op, args) as Promise<T>;
}

async function readFrames(process: Process, { frames }: Frames): Promise<Uint8Array[]> {
  return Promise.all(frames.map((f) => dma<Uint8Array>(process, 'readPhys', f)));
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function booted(options = devices()): Promise<{ machine: Machine; process: Process }> {
  const machine = await bootedMachine(dmaImage('6.18.0'), options);
  return { machine, process: machine.spawn() };
}

describe('PCI devices and the IOMMU driver', () => {
  it('enumerates the bus at boot and logs each device like Linux', async () => {
    const { machine } = await booted();
    const dmesg = machine.dmesg();
    expect(dmesg).toContain('pci 0000:00:03.0: [8086:100e] type 00 class 0x020000');
    expect(dmesg).toContain('pci 0000:00:04.0: [8086:0b25] type 00 class 0x088000');
    expect(machine.hardware.iommu.translationEnabled).toBe(true);
  });

  it('lets the NIC deliver packets into a mapped ring with contiguous sequence numbers and valid checksums', async () => {
    const { machine, process } = await booted();
    await dma(process, 'nicStart', { ringSize: 64 });
    // Nobody consumes: the ring fills (63 descriptors) and further packets are dropped.
    await until(() => machine.counters(NIC).drops > 0, 'machine.counters(NIC).drops > 0');
    const ring = await dma<Ring>(process, 'nicRing');
    expect(ring.head).toBe(63);
    expect(ring.packets.map((p) => p.sequence)).toEqual([...Array(63).keys()]);
    expect(ring.packets.every((p) => p.done && p.checksumOk && p.length === NIC_PACKET_SIZE)).toBe(
      true,
    );
    expect(ring.drops).toBeGreaterThan(0);
    expect(machine.counters(NIC)).toMatchObject({ packets: 63, interrupts: 63, faults: 0 });
  });

  it('has the copy engine copy exactly N bytes across a page boundary', async () => {
    const { machine, process } = await booted();
    const result = await dma<Copied>(process, 'copy', {
      length: 5000,
      srcOffset: 100,
      dstOffset: 3000,
    });
    expect(result).toMatchObject({ status: DMA_COPY_STATUS.SUCCESS, copied: 5000 });
    const expected = new Uint8Array(result.destination.length);
    for (let i = 0; i < 5000; i++) expected[3000 + i] = sourceByte(100 + i);
    expect(result.destination).toEqual(expected);
    expect(machine.counters(COPY)).toMatchObject({ copies: 1, faults: 0 });
  });

  it('faults a DMA outside the mapping, logs its IOVA, BDF and reason, and writes nothing', async () => {
    const { machine, process } = await booted();
    const result = await dma<Copied>(process, 'copy', { length: 64, dst: 'unmapped' });
    expect(result.status).toBe(DMA_COPY_STATUS.FAULT);
    expect(result.copied).toBe(0);
    expect(result.destination.every((b) => b === 0)).toBe(true);
    const faults = await dma<IommuFault[]>(process, 'faults');
    expect(faults).toEqual([
      { iova: result.dstIova, bdf: parseBdf(COPY), reason: 'PTE_NOT_PRESENT', write: true },
    ]);
    expect(machine.counters(COPY).faults).toBe(1);
  });

  it('refuses device writes through a read-only mapping', async () => {
    const { process } = await booted();
    const result = await dma<Copied>(process, 'copy', { length: 64, dst: 'ro' });
    expect(result.status).toBe(DMA_COPY_STATUS.FAULT);
    expect(result.destination.every((b) => b === 0)).toBe(true);
    const faults = await dma<IommuFault[]>(process, 'faults');
    expect(faults.at(-1)).toEqual({
      iova: result.dstIova,
      bdf: parseBdf(COPY),
      reason: 'WRITE_DENIED',
      write: true,
    });
  });

  it('stops the writes of a running NIC once unmapping has invalidated its translations', async () => {
    const { machine, process } = await booted();
    const frames = await dma<Frames>(process, 'nicStart', { ringSize: 32, autoConsume: true });
    await until(() => machine.counters(NIC).packets > 64, 'machine.counters(NIC).packets > 64');
    const running = await readFrames(process, frames);
    await until(async () => {
      const now = await readFrames(process, frames);
      return now.some((bytes, i) => !bytes.every((b, j) => b === running[i]![j]));
    }, 'the ring to change');

    await dma(process, 'nicUnmap');
    const unmapped = await readFrames(process, frames);
    const faults = machine.counters(NIC).faults;
    await until(
      () => machine.counters(NIC).faults > faults + 10,
      'machine.counters(NIC).faults > faults + 10',
    );
    expect(await readFrames(process, frames)).toEqual(unmapped);
  });

  it('resets the devices at a plain kexec: DMA stops, translation is off and the old frames stay poisoned', async () => {
    let atHandover: { translation: boolean; busMaster: boolean[]; dmaOps: number } | undefined;
    const options: MachineOptions = {
      ...devices(),
      onHandover: () => {
        atHandover = {
          translation: machine.hardware.iommu.translationEnabled,
          busMaster: machine.hardware.functions.map((f) => f.busMaster),
          dmaOps: machine.counters().dmaOps,
        };
      },
    };
    const { machine, process } = await booted(options);
    const frames = await dma<Frames>(process, 'nicStart', { ringSize: 32, autoConsume: true });
    await dma(process, 'copy', { length: 128 });
    await until(() => machine.counters(NIC).packets > 64, 'machine.counters(NIC).packets > 64');

    await kexec(machine, process, dmaImage('6.18.1'));
    expect(atHandover).toEqual({
      translation: false,
      busMaster: [false, false],
      dmaOps: expect.any(Number),
    });
    await sleep(100);
    expect(machine.counters().dmaOps).toBe(atHandover!.dmaOps);
    for (const { phys, length } of frames.frames) {
      expect(machine.memory.read(phys, length).every((b) => b === POISON)).toBe(true);
    }
    expect(machine.dmesg(0)).toContain(
      'pci 0000:00:03.0: shutdown: bus mastering off, function reset',
    );
  });
});
