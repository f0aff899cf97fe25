// Benchmark of the kernel layer, run by `pnpm bench` on the built dist (a script, not a test).
// Each figure is printed beside the baseline it is judged against (TOOLCHAIN.md's calibration
// figures): kexec with the early kexec_load preload against kexec without it; boot against a bare
// worker_thread start; KHO preserve and restore rates against copying the same bytes, which is what
// a handover that copies instead of passing frames would pay. Output: a table for people, then one
// JSON line per figure for comparing commits.
import { cpus } from 'node:os';
import { Worker } from 'node:worker_threads';
import { createKernelImage } from '@liveupdate/kernel';
import { LINUX_REBOOT_CMD_KEXEC, Machine } from '@liveupdate/machine';
import { figureTable, printFigureLines } from '../../../tooling/scripts/bench-report.mjs';

// Large enough for the biggest KHO set plus its copy; untouched frames cost no host memory.
const RAM_BYTES = 512 * 1024 ** 2;
const WORKER_RUNS = 15;
const BOOT_RUNS = 10;
const KEXEC_WARMUP = 2;
const KEXEC_RUNS = 15;
const KHO_ROUNDS = 5;
// The 2 MiB set first: its copy needs the most free memory.
const KHO_SETS = [
  { order: 9, count: 64 },
  { order: 0, count: 16384 },
];

const BENCH_MODULE = new URL('./kho-bench-module.js', import.meta.url).href;
const image = (n) =>
  createKernelImage({ version: `6.18.${n}`, cmdline: 'kho=on', modules: [BENCH_MODULE] });

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Milliseconds of the kernel's trace span `name` in boot `boot`. */
function span(machine, boot, name) {
  return machine.spans({ boot, name }).find((s) => s.version !== 'machine').duration;
}

/** A new worker_thread on an empty ES module, until it posts its first message. */
async function workerStart() {
  const empty = new URL(
    'data:text/javascript,import{parentPort}from"node:worker_threads";parentPort.postMessage(0)',
  );
  const times = [];
  for (let i = 0; i < WORKER_RUNS; i++) {
    const start = performance.now();
    const worker = new Worker(empty);
    await new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    times.push(performance.now() - start);
    await worker.terminate();
  }
  return median(times);
}

async function coldBoot() {
  const boots = [];
  const spans = [];
  for (let i = 0; i < BOOT_RUNS; i++) {
    const machine = Machine.create({ ramBytes: RAM_BYTES });
    const start = performance.now();
    await machine.boot(image(0));
    boots.push(performance.now() - start);
    spans.push(span(machine, 0, 'boot'));
    await machine.shutdown();
  }
  return { boot: median(boots), span: median(spans) };
}

/** Caller-measured kexecs: `reboot(KEXEC)` issued → it resolves with the new kernel running. */
async function kexec(preloadKexecImage) {
  const machine = Machine.create({ ramBytes: RAM_BYTES, preloadKexecImage });
  await machine.boot(image(0));
  const times = [];
  for (let n = 1; n <= KEXEC_WARMUP + KEXEC_RUNS; n++) {
    const proc = machine.spawn();
    await proc.kexecLoad(image(n));
    const start = performance.now();
    await proc.reboot(LINUX_REBOOT_CMD_KEXEC);
    if (n > KEXEC_WARMUP) times.push(performance.now() - start);
  }
  await machine.shutdown();
  return median(times);
}

/**
 * KHO_ROUNDS handovers of KHO_SETS: kernel k restores and frees what kernel k-1 preserved, then
 * preserves fresh sets for kernel k+1. Returns frames/s by operation and order, with the rate of
 * copying the same bytes measured in the same kernel.
 */
async function khoRates() {
  const machine = Machine.create({ ramBytes: RAM_BYTES });
  await machine.boot(image(0));
  const samples = [];
  const record = (op, results) => {
    for (const r of results) {
      samples.push({
        op,
        order: r.order,
        rate: r.frames / (r.ms / 1000),
        copy: r.frames / (r.copyMs / 1000),
      });
    }
  };
  for (let round = 1; round <= KHO_ROUNDS; round++) {
    const before = machine.spawn();
    record(
      'preserve',
      await before.syscall('kho_bench', 'preserve', { sets: KHO_SETS, stamp: round }),
    );
    await before.kexecLoad(image(round));
    await before.reboot(LINUX_REBOOT_CMD_KEXEC);
    record('restore', await machine.spawn().syscall('kho_bench', 'restore'));
  }
  await machine.shutdown();
  const rates = {};
  for (const op of ['preserve', 'restore']) {
    for (const { order } of KHO_SETS) {
      const mine = samples.filter((s) => s.op === op && s.order === order);
      rates[`${op}.order-${order}`] = {
        rate: median(mine.map((s) => s.rate)),
        copy: median(mine.map((s) => s.copy)),
      };
    }
  }
  return rates;
}

const worker = await workerStart();
const boot = await coldBoot();
const kexecPreloaded = await kexec(true);
const kexecNotPreloaded = await kexec(false);
const kho = await khoRates();

const ms = (value) => Number(value.toFixed(3));
const perSecond = (value) => Math.round(value);
const figures = [
  {
    name: 'kexec.preloaded',
    value: ms(kexecPreloaded),
    unit: 'ms',
    baseline: 'kexec.not-preloaded',
    baselineValue: ms(kexecNotPreloaded),
  },
  {
    name: 'kexec.not-preloaded',
    value: ms(kexecNotPreloaded),
    unit: 'ms',
    baseline: 'worker.start',
    baselineValue: ms(worker),
  },
  {
    name: 'boot.cold',
    value: ms(boot.boot),
    unit: 'ms',
    baseline: 'worker.start',
    baselineValue: ms(worker),
  },
  {
    name: 'boot.kernel-span',
    value: ms(boot.span),
    unit: 'ms',
    baseline: 'worker.start',
    baselineValue: ms(worker),
  },
  ...Object.entries(kho).map(([key, { rate, copy }]) => ({
    name: `kho.${key}`,
    value: perSecond(rate),
    unit: 'frames/s',
    baseline: `copy.${key.split('.')[1]}`,
    baselineValue: perSecond(copy),
  })),
];

const sets = KHO_SETS.map((s) => `${s.count} × order ${s.order}`).join(' + ');
console.log(
  `kernel bench: node ${process.version}, ${cpus().length} cpus, RAM ${RAM_BYTES / 1024 ** 2} MiB, ` +
    `medians of ${KEXEC_RUNS} kexecs, ${BOOT_RUNS} boots, ${WORKER_RUNS} worker starts, ` +
    `${KHO_ROUNDS} KHO rounds of ${sets} folios`,
);
console.log(figureTable(figures));
console.log(
  [
    'kexec.*: reboot(KEXEC) issued → new kernel running, seen by the caller; "not-preloaded" starts',
    '  the next kernel worker at reboot (Machine option preloadKexecImage: false).',
    'boot.cold: machine.boot(); boot.kernel-span: the kernel\'s own "boot" trace span of that boot.',
    'worker.start: new Worker on an empty ES module until it posts a message.',
    'kho.*: KHO preserveFolio/restoreFolio timed inside the kernel; copy.*: copying the same bytes',
    '  folio by folio (memory.view().set()) in the same kernel, as a copying handover would.',
  ].join('\n'),
);
printFigureLines(figures);
