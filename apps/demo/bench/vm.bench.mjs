// VM benchmark, run by `pnpm bench` on the built dist (a script, not a test). A VM — guest RAM in
// a sealed memfd, an iommufd, a passthrough NIC streaming into a ring in guest RAM that the
// guest loop drains — is live-updated with LUO, and measured three ways:
//   1. the VM's blackout with 256 MiB, 1 GiB and 2 GiB of guest RAM (beside 256 MiB's);
//   2. packets lost at several NIC rates for one ring size, the NIC kept running (LUO) beside
//      the same update with vfio-pci.reset_on_freeze=1 — the device reset at freeze, which is
//      what upstream does today — and how long the NIC was off then;
//   3. packets lost at 100,000 packets/s with a ring of 4,096 descriptors (41 ms of traffic) and
//      1 GiB of guest RAM, where the target is none.
// Output: a table for people, then one JSON line per figure for comparing commits.
import { cpus } from 'node:os';
import { LuoAgent } from '@liveupdate/agent';
import { Machine, NIC_REG_CTRL, NIC_REG_STATUS, NIC_STATUS_RX_ACTIVE } from '@liveupdate/machine';
import { hostKernelImage } from '../dist/host-kernel-image.js';
import { liveUpdateHost } from '../dist/live-update-host.js';
import { NIC_BDF, VmmProcess } from '../dist/vm-process.js';
import {
  figureTable,
  printFigureLines,
  textTable,
} from '../../../tooling/scripts/bench-report.mjs';
import { median, spread } from './bench-common.mjs';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const SIZES = [
  { label: '256MiB', bytes: 256 * MiB },
  { label: '1GiB', bytes: GiB },
  { label: '2GiB', bytes: 2 * GiB },
];
const SIZE_RING = 4096;
const SIZE_RATE = 10_000;
const SIZE_WARMUP = 2;
const SIZE_RUNS = 5;
const RATES = [5_000, 20_000, 50_000, 100_000];
const RATE_RING = 1024;
const RATE_GUEST_BYTES = 64 * MiB;
const RATE_RUNS = 3;
const FAST_RATE = 100_000;
const FAST_RING = 4096;
const FAST_GUEST_BYTES = GiB;
// Targets reported against, not asserted (issue 12).
const TARGET_FLATNESS = 1.1;
const TARGET_BLACKOUT_1GIB_MS = 15;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Boot a machine with one NIC at `rate` packets/s and a VM of `guestBytes` with a ring of
 * `ringSize`, live-update it `runs` times (kernels with `resetOnFreeze` or not) and return each
 * update's VM side, then the guest's ring and the NIC's counters at the end.
 */
async function benchVm({ guestBytes, ringSize, rate, runs, resetOnFreeze = false }) {
  const machine = Machine.create({
    ramBytes: Math.ceil(guestBytes / GiB + 1) * GiB,
    devices: [{ kind: 'nic', bdf: NIC_BDF, packetsPerSecond: rate }],
  });
  let version = 0;
  const image = () => hostKernelImage(`6.18.${version++}`, { resetOnFreeze });
  let vmm;
  try {
    await machine.boot(image());
    let agent = await LuoAgent.start(machine.spawn());
    vmm = await VmmProcess.create(machine, { guestBytes, ringSize });
    const updates = [];
    for (let run = 0; run < runs; run++) {
      // Let the guest drain its ring, so every update starts from an empty one.
      await sleep(50);
      const update = await liveUpdateHost(machine, { agent, vmm }, image());
      agent = update.agent;
      vmm = update.vm.vmm;
      updates.push({ ...update.vm, untilKernelRunningMs: update.untilKernelRunningMs });
    }
    // Receive off, and the NIC stopped (a packet it was delivering still lands: it says when it
    // is done), then the guest takes what is left: it must have seen every packet delivered.
    await vmm.guest.pause();
    await vmm.nic.writeRegister(NIC_REG_CTRL, 0);
    await nicStopped(vmm.nic);
    await vmm.guest.service();
    return { updates, ring: vmm.guest.state, counters: machine.counters(NIC_BDF) };
  } finally {
    await vmm?.guest.pause().catch(() => undefined);
    await machine.shutdown();
  }
}

/** Wait, up to 5 s, for the NIC to clear STATUS.RX_ACTIVE after receive was turned off. */
async function nicStopped(nic, timeoutMs = 5000) {
  const deadline = performance.now() + timeoutMs;
  while (((await nic.readRegister(NIC_REG_STATUS)) & NIC_STATUS_RX_ACTIVE) !== 0) {
    if (performance.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for the NIC to clear STATUS.RX_ACTIVE`,
      );
    await sleep(1);
  }
}

const started = performance.now();
const sizes = [];
for (const size of SIZES) {
  const result = await benchVm({
    guestBytes: size.bytes,
    ringSize: SIZE_RING,
    rate: SIZE_RATE,
    runs: SIZE_WARMUP + SIZE_RUNS,
  });
  const measured = result.updates.slice(SIZE_WARMUP);
  sizes.push({
    ...size,
    blackout: median(measured.map((u) => u.blackoutMs)),
    blackouts: measured.map((u) => u.blackoutMs),
    paused: median(measured.map((u) => u.guestPausedMs)),
    kexec: median(measured.map((u) => u.untilKernelRunningMs)),
    preserve: median(measured.map((u) => u.preserveMs)),
    faults: result.counters.faults,
    drops: result.counters.drops,
    packets: result.counters.packets,
    ring: result.ring,
  });
}

const rates = [];
for (const rate of RATES) {
  const row = { rate };
  for (const resetOnFreeze of [false, true]) {
    const result = await benchVm({
      guestBytes: RATE_GUEST_BYTES,
      ringSize: RATE_RING,
      rate,
      runs: RATE_RUNS,
      resetOnFreeze,
    });
    const { updates } = result;
    // Kept running, the NIC counts what it could not deliver. Reset at freeze, its receive is
    // off from the freeze (inside the reboot) until the new guest programs it again, and the
    // traffic offered meanwhile never reaches it: rate × that time, counted from the blackout.
    const offMs = updates.map((u) => (resetOnFreeze ? u.blackoutMs : 0));
    row[resetOnFreeze ? 'reset' : 'luo'] = {
      dropped: median(updates.map((u) => u.dma.packetsDropped)),
      offMs: median(offMs),
      notReceived: median(offMs.map((ms) => Math.round((rate * ms) / 1000))),
      lost: median(
        updates.map((u, i) => u.dma.packetsDropped + Math.round((rate * offMs[i]) / 1000)),
      ),
      maxOccupancy: median(updates.map((u) => u.dma.maxRingOccupancy)),
      duringBlackout: median(updates.map((u) => u.dma.deliveredDuringBlackout)),
      blackout: median(updates.map((u) => u.blackoutMs)),
      faults: result.counters.faults,
      ring: result.ring,
      packets: result.counters.packets,
    };
  }
  rates.push(row);
}

const fastResult = await benchVm({
  guestBytes: FAST_GUEST_BYTES,
  ringSize: FAST_RING,
  rate: FAST_RATE,
  runs: RATE_RUNS,
});
const fast = {
  dropped: fastResult.updates.map((u) => u.dma.packetsDropped),
  maxOccupancy: Math.max(...fastResult.updates.map((u) => u.dma.maxRingOccupancy)),
  blackouts: fastResult.updates.map((u) => u.blackoutMs),
  paused: fastResult.updates.map((u) => u.guestPausedMs),
  faults: fastResult.counters.faults,
  ring: fastResult.ring,
  packets: fastResult.counters.packets,
};
const fastLost = fast.dropped.reduce((sum, n) => sum + n, 0);

const ms = (value) => Number(value.toFixed(3));
const small = sizes[0];
const figures = [
  ...sizes.map((s) => ({
    name: `blackout.vm.${s.label}`,
    value: ms(s.blackout),
    unit: 'ms',
    baseline: 'blackout.vm.256MiB',
    baselineValue: ms(small.blackout),
  })),
  ...sizes.map((s) => ({
    name: `guest-paused.vm.${s.label}`,
    value: ms(s.paused),
    unit: 'ms',
    baseline: `blackout.vm.${s.label}`,
    baselineValue: ms(s.blackout),
  })),
  ...sizes.map((s) => ({
    name: `preserve.vm.${s.label}`,
    value: ms(s.preserve),
    unit: 'ms',
    baseline: 'preserve.vm.256MiB',
    baselineValue: ms(small.preserve),
  })),
  ...rates.map((r) => ({
    name: `lost.luo.ring${RATE_RING}.${r.rate}pps`,
    value: r.luo.lost,
    unit: 'packets',
    baseline: `lost.reset-on-freeze.ring${RATE_RING}.${r.rate}pps`,
    baselineValue: r.reset.lost,
  })),
  {
    name: `lost.luo.ring${FAST_RING}.${FAST_RATE}pps`,
    value: fastLost,
    unit: 'packets',
    baseline: `delivered.luo.ring${FAST_RING}.${FAST_RATE}pps`,
    baselineValue: fast.packets,
  },
];

console.log(
  `VM bench: node ${process.version}, ${cpus().length} cpus; blackout: medians of ${SIZE_RUNS} ` +
    `live updates after ${SIZE_WARMUP} warm-up, NIC at ${SIZE_RATE} packets/s, ring of ` +
    `${SIZE_RING}; loss: medians of ${RATE_RUNS} live updates per rate, ring of ${RATE_RING}, ` +
    `${RATE_GUEST_BYTES / MiB} MiB guest; ${((performance.now() - started) / 1000).toFixed(1)} s`,
);
console.log(figureTable(figures));
console.log('');
console.log(
  textTable(
    ['guest RAM (median ms)', ...sizes.map((s) => s.label)],
    [
      ['preserve (guest RAM, iommufd, NIC)', ...sizes.map((s) => s.preserve.toFixed(2))],
      ['reboot → new kernel running', ...sizes.map((s) => s.kexec.toFixed(2))],
      ['VM blackout: reboot → guest polls', ...sizes.map((s) => s.blackout.toFixed(2))],
      ['  median [min–max]', ...sizes.map((s) => spread(s.blackouts))],
      ['guest paused → polls again', ...sizes.map((s) => s.paused.toFixed(2))],
      ['IOMMU faults, drops (whole run)', ...sizes.map((s) => `${s.faults}, ${s.drops}`)],
      [
        'ring: taken / delivered, bad',
        ...sizes.map((s) => `${s.ring.consumed} / ${s.packets}, ${s.ring.badChecksum}`),
      ],
    ],
    (i) => i > 0,
  ),
);
console.log('');
console.log(
  textTable(
    [
      `NIC rate (ring ${RATE_RING})`,
      'ring lasts ms',
      'LUO: dropped',
      'LUO: max in ring',
      'LUO: VM blackout ms',
      'reset: NIC off ms',
      'reset: not received',
      'reset: dropped',
      'lost, LUO vs reset',
    ],
    rates.map((r) => [
      `${r.rate} packets/s`,
      (((RATE_RING - 1) / r.rate) * 1000).toFixed(1),
      String(r.luo.dropped),
      String(r.luo.maxOccupancy),
      r.luo.blackout.toFixed(2),
      r.reset.offMs.toFixed(2),
      String(r.reset.notReceived),
      String(r.reset.dropped),
      `${r.luo.lost} vs ${r.reset.lost}`,
    ]),
    (i) => i > 0,
  ),
);
console.log('');
console.log(
  `${FAST_RATE} packets/s, ring of ${FAST_RING} (${(((FAST_RING - 1) / FAST_RATE) * 1000).toFixed(1)} ms), ` +
    `${FAST_GUEST_BYTES / GiB} GiB guest, ${RATE_RUNS} live updates: dropped ${fast.dropped.join(', ')}; ` +
    `most in the ring ${fast.maxOccupancy}; VM blackout ${spread(fast.blackouts)} ms; ` +
    `guest paused ${spread(fast.paused)} ms`,
);
const byLabel = Object.fromEntries(sizes.map((s) => [s.label, s]));
const flatness = byLabel['2GiB'].blackout / byLabel['256MiB'].blackout;
const verdict = (met) => (met ? 'met' : 'MISSED');
console.log(
  [
    '',
    `target: VM blackout with 2 GiB within ${TARGET_FLATNESS}× of 256 MiB: ${flatness.toFixed(2)}× — ${verdict(flatness <= TARGET_FLATNESS)}`,
    `target: VM blackout with 1 GiB at most ${TARGET_BLACKOUT_1GIB_MS} ms: ${byLabel['1GiB'].blackout.toFixed(2)} ms — ${verdict(byLabel['1GiB'].blackout <= TARGET_BLACKOUT_1GIB_MS)}`,
    `target: no packet lost at ${FAST_RATE} packets/s with a ring of ${FAST_RING}: ${fastLost} lost — ${verdict(fastLost === 0)}`,
  ].join('\n'),
);
console.log(
  [
    '',
    "blackout.vm.*: the old kernel's reboot span begins → the new VMM has fetched its files,",
    '  restored the HWPT, bound the NIC, mapped guest RAM, and the guest polled. The new IOAS, the',
    '  hitless move of the NIC onto it and the session finish follow, the guest running.',
    'guest-paused.vm.*: the guest loop paused just before the reboot → it polled again.',
    'lost.luo.*: packets the NIC dropped during an update (ring full), counted by the NIC.',
    'lost.reset-on-freeze.*: with vfio-pci.reset_on_freeze=1 the NIC is reset at freeze and',
    '  receives nothing until the new guest programs it again; what the wire offered meanwhile is',
    '  computed as rate × (reboot → guest resumed), plus what the NIC dropped. The ring content',
    '  from before the reset is still in guest RAM and the guest takes it; the sequence restarts.',
  ].join('\n'),
);
printFigureLines(figures);

const failures = [
  ...sizes.flatMap((s) => [
    s.faults > 0 && `${s.label}: ${s.faults} IOMMU faults`,
    (s.ring.consumed !== s.packets || s.ring.badChecksum > 0 || s.ring.outOfOrder > 0) &&
      `${s.label}: ring broken (${JSON.stringify(s.ring)}, ${s.packets} delivered)`,
  ]),
  fast.faults > 0 && `${FAST_RATE} packets/s, ring ${FAST_RING}: ${fast.faults} IOMMU faults`,
  (fast.ring.consumed !== fast.packets || fast.ring.badChecksum > 0 || fast.ring.outOfOrder > 0) &&
    `${FAST_RATE} packets/s, ring ${FAST_RING}: ring broken (${JSON.stringify(fast.ring)}, ${fast.packets} delivered)`,
  ...rates.flatMap((r) => [
    r.luo.faults > 0 && `${r.rate} packets/s: ${r.luo.faults} IOMMU faults`,
    ...['luo', 'reset'].map(
      (mode) =>
        (r[mode].ring.consumed !== r[mode].packets ||
          r[mode].ring.badChecksum > 0 ||
          r[mode].ring.outOfOrder > 0) &&
        `${r.rate} packets/s, ${mode}: ring broken (${JSON.stringify(r[mode].ring)}, ${r[mode].packets} delivered)`,
    ),
  ]),
].filter(Boolean);
if (failures.length > 0) {
  for (const failure of failures) console.log(`FAILED: ${failure}`);
  process.exitCode = 1;
}
