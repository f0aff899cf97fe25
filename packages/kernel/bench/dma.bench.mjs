// Benchmark of the machine's DMA path, run by `pnpm bench` on the built dist (a script, not a
// test). A machine with a NIC and a DMA copy engine boots a kernel whose bench module
// (dma-bench-module.js) maps a receive ring and copy buffers through the IOMMU driver; each device
// then runs with the IOTLB on and off (IOMMU GCTL bit 1, `setIotlbEnabled`). Figures, each beside
// its baseline: NIC packets/s delivered with the IOTLB on against off; copy-engine GB/s on against
// off, and against a plain copy of the same bytes in the kernel; and the cost of one page-table
// walk, timed in this thread on hand-built tables: a 2 MiB leaf against a 4 KiB leaf, and an IOTLB
// hit against a 4 KiB walk. Output: a table for people, then one JSON line per figure.
import { cpus } from 'node:os';
import { createKernelImage } from '@liveupdate/kernel';
import {
  IOMMU_PTE_PAGE_SIZE,
  IOMMU_PTE_READ,
  IOMMU_PTE_WRITE,
  IommuRegisters,
  IommuTranslation,
  Machine,
  PAGE_SIZE,
  PhysicalMemory,
  parseBdf,
} from '@liveupdate/machine';
import { figureTable, printFigureLines } from '../../../tooling/scripts/bench-report.mjs';
import { COPY_BDF, NIC_BDF } from './dma-bench-module.js';

const RAM_BYTES = 256 * 1024 ** 2;
// Far above what the model can deliver: the NIC emits at most 256 packets per device-worker step
// (a step, then a 1 ms wait), so the figure is the model's ceiling and the DMA work within it.
const NIC_PACKETS_PER_SECOND = 1e9;
const NIC_RING_SIZE = 8192;
const NIC_RUN_MS = 1500;
const COPY_COPIES = 512;
const RUNS = 3;
const WALK_IOVAS = 512;
const WALK_ROUNDS = 4000;

const BENCH_MODULE = new URL('./dma-bench-module.js', import.meta.url).href;

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * Nanoseconds per translation on tables built by hand in a small RAM (docs/iommu-hardware.md):
 * WALK_IOVAS IOVAs mapped by 4 KiB leaves, as many by 2 MiB leaves, each walked with the IOTLB
 * off; and the 4 KiB IOVAs again with the IOTLB on and warm.
 */
function walkCosts() {
  const RW = IOMMU_PTE_READ | IOMMU_PTE_WRITE;
  const memory = PhysicalMemory.allocate(16 * 1024 ** 2);
  let next = 1;
  const frame = () => {
    const phys = next++ * PAGE_SIZE;
    memory.fill(phys, PAGE_SIZE, 0);
    return phys;
  };
  const bdf = parseBdf(NIC_BDF);
  const root = frame();
  const context = frame();
  const top = frame();
  memory.writeU32(root, context | 1);
  memory.writeU32(context + (bdf & 0xff) * 16, top | 1);
  memory.writeU32(context + (bdf & 0xff) * 16 + 8, 1 << 8);
  const map = (iova, phys, leafLevel) => {
    let table = top;
    for (let level = 4; level > leafLevel; level--) {
      const at = table + (Math.floor(iova / 2 ** (12 + 9 * (level - 1))) % 512) * 8;
      let child = memory.readU32(at) & ~0xfff;
      if (child === 0) {
        child = frame();
        memory.writeU32(at, child | RW);
      }
      table = child;
    }
    const leaf = table + (Math.floor(iova / 2 ** (12 + 9 * (leafLevel - 1))) % 512) * 8;
    memory.writeU32(leaf, phys | RW | (leafLevel === 2 ? IOMMU_PTE_PAGE_SIZE : 0));
  };
  const small = Array.from({ length: WALK_IOVAS }, (_, i) => 0x4000_0000 + i * PAGE_SIZE);
  const huge = Array.from({ length: WALK_IOVAS }, (_, i) => 0x80_0000_0000 + i * 2 * 1024 ** 2);
  small.forEach((iova, i) => map(iova, 0x80_0000 + (i % 256) * PAGE_SIZE, 1));
  huge.forEach((iova) => map(iova, 0x80_0000, 2));

  const registers = new IommuRegisters(IommuRegisters.allocate(), []);
  registers.setRootTable(root);
  registers.setTranslationEnabled(true);
  const translation = new IommuTranslation(memory, registers);
  const time = (iovas) => {
    let sink = 0;
    for (let round = 0; round < WALK_ROUNDS / 4; round++) {
      for (const iova of iovas) sink += translation.translate(bdf, iova + 8, false).phys;
    }
    const start = process.hrtime.bigint();
    for (let round = 0; round < WALK_ROUNDS; round++) {
      for (const iova of iovas) sink += translation.translate(bdf, iova + 8, false).phys;
    }
    const ns = Number(process.hrtime.bigint() - start) / (WALK_ROUNDS * iovas.length);
    if (!(sink > 0)) throw new Error('walk bench: a translation faulted');
    return ns;
  };
  registers.setIotlbEnabled(false);
  translation.sync();
  const walk4k = median([time(small), time(small), time(small)]);
  const walk2m = median([time(huge), time(huge), time(huge)]);
  registers.setIotlbEnabled(true);
  translation.sync();
  const hit = median([time(small), time(small), time(small)]);
  if (translation.iotlbSize !== WALK_IOVAS) throw new Error('walk bench: the IOTLB did not fill');
  return { walk4k, walk2m, hit };
}

const walks = walkCosts();

const machine = Machine.create({
  ramBytes: RAM_BYTES,
  devices: [
    { kind: 'nic', bdf: NIC_BDF, packetsPerSecond: NIC_PACKETS_PER_SECOND },
    { kind: 'dma-copy', bdf: COPY_BDF },
  ],
});
await machine.boot(
  createKernelImage({ version: '6.18.0', cmdline: 'kho=on', modules: [BENCH_MODULE] }),
);
const proc = machine.spawn();
const bench = (op, args = {}) => proc.syscall('dma_bench', op, args);
const setIotlb = (on) => machine.hardware.iommu.setIotlbEnabled(on);

// NIC: alternate IOTLB on and off, RUNS windows each, after a warm-up window.
const nic = { on: [], off: [], drops: 0 };
await bench('nicStart', { ringSize: NIC_RING_SIZE });
await bench('nicMeasure', { ms: 300 });
for (let run = 0; run < RUNS; run++) {
  for (const on of [true, false]) {
    setIotlb(on);
    const r = await bench('nicMeasure', { ms: NIC_RUN_MS });
    (on ? nic.on : nic.off).push(r.packets / (r.ms / 1000));
    nic.drops += r.drops;
  }
}
await bench('nicStop');

// Copy engine: the same, COPY_COPIES copies of 1 MiB per run, after a warm-up run.
const copy = { on: [], off: [], host: [] };
setIotlb(true);
await bench('copyRun', { copies: 64 });
for (let run = 0; run < RUNS; run++) {
  for (const on of [true, false]) {
    setIotlb(on);
    const r = await bench('copyRun', { copies: COPY_COPIES });
    (on ? copy.on : copy.off).push(r.bytes / (r.ms / 1000) / 1e9);
    copy.host.push(r.bytes / (r.hostMs / 1000) / 1e9);
  }
}
setIotlb(true);
const counters = machine.counters();
await machine.shutdown();
if (counters.faults !== 0) throw new Error(`dma bench: ${counters.faults} IOMMU faults`);

const round = (value, digits) => Number(value.toFixed(digits));
const nicOn = Math.round(median(nic.on));
const nicOff = Math.round(median(nic.off));
const copyOn = round(median(copy.on), 3);
const copyOff = round(median(copy.off), 3);
const figures = [
  {
    name: 'nic.rx.iotlb-on',
    value: nicOn,
    unit: 'packets/s',
    baseline: 'nic.rx.iotlb-off',
    baselineValue: nicOff,
  },
  {
    name: 'copy-engine.iotlb-on',
    value: copyOn,
    unit: 'GB/s',
    baseline: 'copy-engine.iotlb-off',
    baselineValue: copyOff,
  },
  {
    name: 'copy-engine.vs-host',
    value: copyOn,
    unit: 'GB/s',
    baseline: 'host.copy',
    baselineValue: round(median(copy.host), 3),
  },
  {
    name: 'iommu.walk.2m',
    value: round(walks.walk2m, 1),
    unit: 'ns/translation',
    baseline: 'iommu.walk.4k',
    baselineValue: round(walks.walk4k, 1),
  },
  {
    name: 'iommu.iotlb-hit',
    value: round(walks.hit, 1),
    unit: 'ns/translation',
    baseline: 'iommu.walk.4k',
    baselineValue: round(walks.walk4k, 1),
  },
];

console.log(
  `dma bench: node ${process.version}, ${cpus().length} cpus, medians of ${RUNS} runs per ` +
    `setting: ${NIC_RUN_MS} ms NIC windows (ring ${NIC_RING_SIZE}, ${nic.drops} drops in all), ` +
    `${COPY_COPIES} × 1 MiB copies; walks: ${WALK_IOVAS} IOVAs × ${WALK_ROUNDS} rounds`,
);
console.log(figureTable(figures));
console.log(
  [
    'nic.rx.*: packets delivered per second into a mapped ring the kernel hands back every 1 ms,',
    "  at a source rate above the model's ceiling (256 packets per device step, then a 1 ms wait);",
    '  each packet is 3 DMAs (descriptor read, packet write, descriptor write-back).',
    'copy-engine.*: 1 MiB descriptors (4 KiB mappings, 512 translations each), ring kept full, timed',
    '  in the kernel; copy-engine.vs-host is iotlb-on again, beside host.copy: memory.view().set() of',
    '  the same 1 MiB, as many times, in the kernel.',
    'iotlb-off: IOMMU GCTL bit 1 set, every access walks the tables in RAM.',
    'iommu.*: IommuTranslation.translate() in this thread on hand-built tables, IOTLB off',
    '  (walk.4k: root, context, 4 levels; walk.2m: root, context, 3 levels) or on and warm (hit).',
  ].join('\n'),
);
printFigureLines(figures);
