// `pnpm demo`: the host the LUO document has in mind. A key-value cache keeps a million keys in a
// memfd, and a VM keeps its guest RAM in a sealed memfd with a passthrough NIC (vfio, iommufd)
// streaming packets into a ring there, while the kernel under them is live-updated (6.18.0 →
// 6.18.1, or further with --updates). Each keeps its files with the host's agent (luod), the one
// process that opens /dev/liveupdate, which preserves them in a LUO session per service; after the
// kexec a new agent restores them and new processes fetch them: the cache answers every key from
// the same RAM frames, the VMM moves the still-running NIC onto a new IOAS and its guest takes up
// the ring where it left it.
// With --scenario skew the kernels differ in their modules (6.18.0 → 6.19.0 → back to 6.18.0 →
// a kernel without vfio-pci, which the running kernel refuses before the blackout). Prints each
// phase of the blackout, what the NIC did during it, the formats written and the checks; with
// --json only a report, with --quiet only a row per update and their medians, with --trace a
// Chrome trace too, with --report an HTML page of the report; --explain glosses each term once.
// With --memcached the cache also serves memcached on 127.0.0.1, and host-side clients
// (memcache-client, Debian's memcslap, memccp, memccat) drive it across the update(s). Ends with
// PASS or FAIL: what failed; exits 1 if any check fails.
import { writeFile } from 'node:fs/promises';
import { LuoAgent } from '@liveupdate/agent';
import { Machine } from '@liveupdate/machine';
import { CacheProcess, CACHE_ENTRY, CACHE_SESSION, FIRST_KEY } from './cache-process.js';
import { DEMO_USAGE, parseDemoOptions, type DemoOptions } from './demo-options.js';
import {
  demoReport,
  demoSettings,
  liveUpdateReport,
  type DemoReport,
  nicActivity,
  type DemoStep,
  type RefusedStep,
  type UpdatedStep,
} from './demo-report.js';
import { demoTrace } from './demo-trace.js';
import {
  demoVerdict,
  dropsUnexplained,
  withMemcachedVerdict,
  type DemoVerdict,
} from './demo-verdict.js';
import { HandoverFormatsRecorder, type HandoverFormats } from './handover-formats.js';
import { htmlReport, htmlReportAssets } from './html-report.js';
import { coldUpdateNote } from './cold-update-note.js';
import { Glossary } from './glossary.js';
import { checkHost, type HostCheck } from './host-check.js';
import { readKernelMemory, type KernelMemory } from './kernel-memory.js';
import { hostFacts } from './host-facts.js';
import { sameKernelChain, skewKernelChain } from './kernel-chain.js';
import { planKvCache, type KvCacheLayout } from './kv-cache.js';
import { attemptLiveUpdateHost } from './live-update-attempt.js';
import { cacheLiveUpdateOf, type CacheLiveUpdate } from './live-update-cache.js';
import type { VmDmaReport } from './live-update-host.js';
import { MEMCACHED_SLOT_BYTES } from './memcached-table.js';
import {
  DEMO_MEMCACHED_CONNECTIONS,
  DEMO_MEMCACHED_KEYS,
  DEMO_MEMCACHED_SLOTS,
  MemcachedDemoRun,
  type MemcachedDemoResult,
} from './memcached-demo-run.js';
import type { MemcslapRun } from './memcached-tools.js';
import { NicSampler } from './nic-sampler.js';
import { quietTable } from './quiet-table.js';
import { textTable } from './text-table.js';
import { fillGuestMemory } from './vm-guest-memory.js';
import type { GuestRingCheck } from './vm-ring-check.js';
import { NIC_BDF, VM_BLACKOUT_PHASES, VM_ENTRIES, VM_SESSION, VmmProcess } from './vm-process.js';
import { updateTimeline } from './update-timeline.js';
import { terminalColumns, wrapText } from './wrap-text.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
/** The NIC's packet rate and the guest's ring: 4,095 packets of room, about 400 ms at this rate. */
const NIC_PACKETS_PER_SECOND = 10_000;
const RING_SIZE = 8192;

const fixed = (value: number): string => value.toFixed(2);
const count = (value: number): string => value.toLocaleString('en-US');

/** Prose is wrapped to the terminal; tables are printed as they are. */
const COLUMNS = terminalColumns(process.stdout);

const heading = (title: string): string =>
  `\n── ${title} ${'─'.repeat(Math.max(0, COLUMNS - 4 - title.length))}`;

/**
 * How the story is told: nothing with `--json` or `--quiet`, else wrapped to the terminal and,
 * with `--explain`, each term explained after the first line that names it.
 */
function storyTeller(options: DemoOptions): (text: string) => void {
  if (options.json || options.quiet) return () => undefined;
  const glossary = options.explain ? new Glossary() : undefined;
  return (text) => {
    // Line by line, so a term is explained under the line that names it, not under a block.
    for (const line of text.split('\n')) {
      console.log(wrapText(line, COLUMNS));
      for (const meaning of glossary?.explainNew(line) ?? []) {
        console.log(wrapText(meaning, COLUMNS));
      }
    }
  };
}

/** The lines of boot `boot`'s log that tell the live update's story. */
function storyLines(machine: Machine, boot: number): string {
  return machine
    .dmesg(boot)
    .split('\n')
    .filter((line) => /LUO|KHO|memfd|iommufd|vfio|DMAR|kexec|reboot|Linux version/.test(line))
    .map((line) => `  ${line}`)
    .join('\n');
}

async function run(options: DemoOptions, layout: KvCacheLayout): Promise<DemoVerdict> {
  const say = storyTeller(options);
  const guestBytes = options.guestMib * MiB;
  // Allocated lazily: only frames the kernels touch cost host memory.
  const memcachedBytes = options.memcached ? DEMO_MEMCACHED_SLOTS * MEMCACHED_SLOT_BYTES : 0;
  const ramBytes =
    Math.max(2, Math.ceil((layout.fileBytes + memcachedBytes + guestBytes) / GiB) + 1) * GiB;
  const chain = options.scenario === 'skew' ? skewKernelChain() : sameKernelChain(options.updates);
  // Three sessions, all kept by the agent: the cache's, the agent's manifest, and the VM's, with
  // the most files.
  const handovers = new HandoverFormatsRecorder(3, Object.keys(VM_ENTRIES).length);
  const machine = Machine.create({
    ramBytes,
    devices: [{ kind: 'nic', bdf: NIC_BDF, packetsPerSecond: NIC_PACKETS_PER_SECOND }],
    onHandover: handovers.onHandover,
  });
  const steps: DemoStep[] = [];
  let vmm: VmmProcess | undefined;
  let report: DemoReport | undefined;
  let memcachedRun: MemcachedDemoRun | undefined;
  // The trace's NIC counters and the HTML report's packets per millisecond.
  const sampler =
    options.trace || options.report
      ? new NicSampler(machine, NIC_BDF, () => vmm?.guest)
      : undefined;
  try {
    say(
      `liveupdate demo: ${ramBytes / GiB} GiB machine, kernels ${chain.map((k) => k.version).join(' → ')}, ` +
        `cache of ${count(options.keys)} keys in a ${options.mib} MiB memfd, ` +
        `VM with ${options.guestMib} MiB of guest RAM and a passthrough NIC at ${NIC_BDF}`,
    );
    if (options.scenario === 'skew') {
      for (const kernel of chain) say(`  ${kernel.version}: ${kernel.build}`);
    }
    let start = performance.now();
    await machine.boot(chain[0]!.image);
    say(`\n${chain[0]!.version} cold boot: ${fixed(performance.now() - start)} ms`);
    let agent = await LuoAgent.start(machine.spawn());
    say(
      `agent (luod) pid ${agent.process.pid} listens at ${agent.path}: the one process that opens ` +
        `/dev/liveupdate; the cache and the VMM keep their files with it, and the host kexecs from it`,
    );
    const created = await CacheProcess.create(
      machine,
      layout,
      options.memcached ? { memcached: { slots: DEMO_MEMCACHED_SLOTS } } : {},
    );
    let cacheProcess = created.cacheProcess;
    say(
      `cache pid ${cacheProcess.process.pid}: memfd_create, ftruncate ${options.mib} MiB, mmap ` +
        `(${cacheProcess.mapping.segments.length} segments): ${fixed(created.timings.memfd)} ms`,
    );
    say(
      `  built ${count(layout.keys)} keys in ${count(layout.slots)} slots of ${layout.recordBytes} B ` +
        `(load ${(layout.keys / layout.slots).toFixed(2)}) through the mapping: ${fixed(created.timings.build)} ms`,
    );
    const memcached = cacheProcess.memcached;
    if (memcached) {
      say(
        `  and a memcached table of ${count(memcached.table.slots)} items of up to ` +
          `${count(memcached.table.maxValueBytes)} B after the key-value slots, at memfd offset ` +
          `${count(memcached.table.layout.offset)} (the memfd is ` +
          `${fixed(cacheProcess.mapping.length / MiB)} MiB in all); memcached listens on ` +
          `127.0.0.1:${memcached.server.port}`,
      );
      memcachedRun = await MemcachedDemoRun.start(memcached.server.port);
      say(
        `  memcache-client (npm) stored ${count(DEMO_MEMCACHED_KEYS)} keys; it will run set, get on ` +
          `${DEMO_MEMCACHED_CONNECTIONS} connections, without pause, from right before the first ` +
          `update until after the last`,
      );
      say(memcachedToolsLine(memcachedRun.missingTools));
    }
    start = performance.now();
    vmm = await VmmProcess.create(machine, { guestBytes, ringSize: RING_SIZE });
    fillGuestMemory(vmm.guest);
    say(
      `VMM pid ${vmm.process.pid}: guest RAM memfd of ${options.guestMib} MiB (sealed grow/shrink/seal), ` +
        `iommufd IOAS ${vmm.ioas} mapping it at IOVA 0, NIC ${NIC_BDF} bound through vfio and ` +
        `attached to HWPT ${vmm.hwpt} (marked for preservation): ${fixed(performance.now() - start)} ms`,
    );
    say(
      `  the guest polls a ring of ${count(RING_SIZE)} descriptors in guest RAM; the NIC sends ` +
        `${count(NIC_PACKETS_PER_SECOND)} packets/s, so the ring holds ` +
        `${fixed(((RING_SIZE - 1) / NIC_PACKETS_PER_SECOND) * 1000)} ms of traffic; ` +
        `the rest of guest RAM is stamped page by page`,
    );

    for (const next of chain.slice(1)) {
      memcachedRun?.beforeUpdate();
      const attempt = await attemptLiveUpdateHost(
        machine,
        { agent, cache: cacheProcess, vmm },
        next.image,
      );
      const memcslapRun = await memcachedRun?.afterUpdate();
      if (attempt.outcome === 'refused') {
        const { refusal } = attempt;
        const host = await checkHost(machine, cacheProcess, vmm, refusal.guestAtRefusal!);
        const step: RefusedStep = {
          ...attempt,
          host,
          dmaAfterRefusal: nicActivity(refusal.nicAtRefusal!, machine.counters(NIC_BDF)),
        };
        steps.push(step);
        sayRefused(say, step, layout);
        if (memcslapRun) say(memcslapLine(memcslapRun));
        continue;
      }
      const update = cacheLiveUpdateOf(attempt.update);
      const vm = attempt.update.vm!;
      const agentPid = agent.process.pid;
      agent = update.agent;
      cacheProcess = update.cacheProcess;
      vmm = vm.vmm;
      const formats = handovers.formatsOf(machine.bootCount - 1);
      const luo = handovers.luoAbiOf(machine.bootCount - 1);
      const host = await checkHost(machine, cacheProcess, vmm, vm.ring);
      const kernel = await readKernelMemory(machine);
      steps.push({ ...attempt, update, vm, formats, luo, host, kernel });

      say(heading(`live update ${update.from} → ${update.to}`));
      say('before the blackout, while the cache serves and the NIC streams into the guest:');
      say(
        `  the cache stores its memfd as "${CACHE_ENTRY}" with the agent (pid ${agentPid}), which ` +
          `preserves it in session "${CACHE_SESSION}": ${fixed(update.preserveMs)} ms`,
      );
      say(
        `  the VMM stores guest RAM (order 0), the iommufd (1) and the NIC's vfio cdev (2) with the ` +
          `agent, which preserves them in session "${VM_SESSION}" in that order: ${fixed(vm.preserveMs)} ms`,
      );
      say(
        `  the agent writes its manifest into a sealed memfd and preserves it in "luod": ` +
          `${fixed(update.agentPrepareMs)} ms`,
      );
      say(
        `  the agent's process loads ${update.to} (kexec_load; its worker starts and imports its ` +
          `modules): ${fixed(update.kexecLoadMs)} ms`,
      );
      say(
        `  LIVEUPDATE_IOCTL_CHECK_KEXEC: ${attempt.check.version} reads everything a kexec now would hand over`,
      );
      say(`then the guest pauses and reboot(LINUX_REBOOT_CMD_KEXEC); from the kernels' logs:`);
      say(storyLines(machine, machine.bootCount - 2));
      say(storyLines(machine, machine.bootCount - 1));
      say(formatsLine(luo, formats));
      say(rememberedLine(update.to, kernel));
      say(
        `new agent pid ${agent.process.pid} restored "${CACHE_SESSION}" and "${VM_SESSION}"; new cache pid ` +
          `${cacheProcess.process.pid} fetched the memfd from it (never opening /dev/liveupdate), mapped it ` +
          `(${cacheProcess.mapping.segments.length} segments), answered key ${FIRST_KEY}: ` +
          `${update.firstKeyOk ? 'right value' : 'WRONG VALUE'}`,
      );
      say(
        `new VMM pid ${vmm.process.pid}: hello (the agent retrieved guest RAM, then the iommufd, ` +
          `whose retrieve brought back the IOMMU's FLB the NIC's files share, then the NIC), fetched ` +
          `the three, restored HWPT, bound the NIC, mapped guest RAM and resumed the guest, which took ` +
          `up its ring while the NIC still translated through the restored domain; then, the guest ` +
          `running, it moved the NIC onto IOAS ${vmm.ioas} without stopping it and had the agent ` +
          `finish "${VM_SESSION}"`,
      );
      say(checkLines(host, layout));
      say(nicLines(vm.dma));
      if (vm.dma.packetsDropped > 0) {
        say(
          `  the guest was paused ${fixed(vm.guestPausedMs)} ms and the ring holds ${fixed(RING_HEADROOM_MS)} ms: ` +
            (dropsUnexplained(vm, RING_HEADROOM_MS)
              ? 'drops while the ring should have held them: FAILED'
              : 'this machine was too slow for the ring; drops are expected'),
        );
      }
      say(ringLine(host.ring));
      if (memcachedRun) {
        say(
          `memcached: the old cache's listener went with it at the kexec; the new cache pid ` +
            `${cacheProcess.process.pid} attached to the table in the same memfd and listens again ` +
            `on 127.0.0.1:${memcachedRun.port}; memcache-client is served again`,
        );
      }
      if (memcslapRun) say(memcslapLine(memcslapRun));
    }

    const memcachedResult = await memcachedRun?.finish();
    memcachedRun = undefined;
    if (memcachedResult) say(memcachedLines(memcachedResult));

    const updated = steps.filter((step): step is UpdatedStep => step.outcome === 'updated');
    const stepsVerdict = demoVerdict(steps, RING_HEADROOM_MS);
    const verdict = memcachedResult
      ? withMemcachedVerdict(stepsVerdict, memcachedResult.figures)
      : stepsVerdict;
    const notes = [
      coldUpdateNote(updated.map((step) => step.update.blackoutMs)),
      memcachedResult && memcachedResult.missingTools.length > 0
        ? `${memcachedResult.missingTools.join(', ')} not found (Debian: libmemcached-tools): ` +
          'only memcache-client drove the memcached server'
        : null,
    ].filter((note) => note !== null);
    const liveUpdates = steps.map((step) => liveUpdateReport(step, layout.keys));
    report = demoReport(
      options,
      hostFacts(),
      verdict,
      notes,
      liveUpdates,
      memcachedResult?.figures,
    );
    if (options.json) {
      console.log(JSON.stringify(report, null, 2));
    } else if (options.quiet) {
      console.log(quietTable(steps));
      if (memcachedResult) console.log(memcachedQuietLine(memcachedResult));
    } else if (updated.length > 0) {
      printPhases(say, updated);
    }
    if (!options.json) {
      for (const note of notes) console.log(wrapText(`\nnote: ${note}`, COLUMNS));
    }
    return verdict;
  } finally {
    await memcachedRun?.close();
    const samples = sampler?.stop() ?? [];
    // The guest loop issues syscalls; stop it before the machine goes.
    await vmm?.guest.pause().catch(() => undefined);
    await machine.shutdown();
    if (options.trace) {
      // Written whatever happened: a trace is most wanted when something failed.
      const trace = demoTrace(machine, steps, samples, demoSettings(options));
      await writeFile(options.trace, JSON.stringify(trace));
      say(
        `\ntrace written to ${options.trace}: open it in https://ui.perfetto.dev or chrome://tracing`,
      );
    }
    if (options.report && report) {
      // Built from the JSON report itself, so the page and `--json` cannot disagree.
      const timelines = steps
        .filter((step): step is UpdatedStep => step.outcome === 'updated')
        .map((step) => updateTimeline(machine, step, samples));
      await writeFile(options.report, htmlReport(report, timelines, htmlReportAssets()));
      say(`\nreport written to ${options.report}: open it in a browser (it needs no network)`);
    }
  }
}

/** The refused step: what the check said, what `reboot` did, and the services afterwards. */
function sayRefused(say: (text: string) => void, step: RefusedStep, layout: KvCacheLayout): void {
  const { check, refusal, host, dmaAfterRefusal } = step;
  say(heading(`live update ${refusal.from} → ${refusal.to}: refused before the blackout`));
  say(
    'the services preserved their files and the updater loaded the kernel, as for any update; ' +
      'then, before pausing anything:',
  );
  say(
    `  LIVEUPDATE_IOCTL_CHECK_KEXEC: ${check.version} cannot read ${check.problemCount} ` +
      `thing${check.problemCount === 1 ? '' : 's'} a kexec now would hand over:`,
  );
  for (const problem of check.problems) say(`    ${problem}`);
  say(
    `reboot(LINUX_REBOOT_CMD_KEXEC) anyway, the guest still running: ${refusal.code}; ` +
      `${refusal.from} logged, before its reboot notifiers (nothing frozen):`,
  );
  for (const line of refusal.logLines) say(`  ${line}`);
  say(`${refusal.from} keeps running the cache and the VM:`);
  say(checkLines(host, layout));
  say(
    `the NIC since the refusal: ${count(dmaAfterRefusal.packetsDelivered)} more delivered, ` +
      `${count(dmaAfterRefusal.packetsDropped)} dropped, ${count(dmaAfterRefusal.iommuFaults)} IOMMU faults`,
  );
  say(ringLine(host.ring));
}

function memcachedToolsLine(missing: readonly string[]): string {
  return missing.length === 0
    ? `  memccp stored a file of ${count(30_000)} B; memcslap will load the server during each update`
    : `  ${missing.join(', ')} not found (Debian: apt-get install libmemcached-tools): memcslap, ` +
        'memccp and memccat are left out; only memcache-client drives the server';
}

/** memcslap's own summary: its exit, its time, and how many errors it printed (not counted). */
function memcslapLine(run: MemcslapRun): string {
  const errors = run.lines.filter((line) => /error|failure/i.test(line));
  const summary = run.lines.filter((line) => !/error|failure/i.test(line));
  return [
    `memcslap ${run.args.join(' ')} across the update: exit ${String(run.code)}, ` +
      `${count(errors.length)} error lines (its connections dropped at the kexec; a load ` +
      `generator, not counted below)`,
    ...summary.slice(-2).map((line) => `  ${line}`),
    ...errors.slice(0, 1).map((line) => `  first error: ${line}`),
  ].join('\n');
}

function memcachedLines({ figures, fileReadBack }: MemcachedDemoResult): string {
  return [
    heading('memcached, as its clients saw it'),
    `memcache-client read back all ${count(DEMO_MEMCACHED_KEYS)} keys` +
      (fileReadBack === null
        ? ''
        : `; memccat read back the file memccp stored: ${fileReadBack ? 'same bytes' : 'DIFFERENT'}`),
    `  ${count(figures.requests)} requests served, ${count(figures.clientErrors)} client errors, ` +
      `longest time without a successful request ${fixed(figures.outageMs)} ms`,
    `  ${count(figures.wrongValues)} wrong values, ${count(figures.lostWrites)} acknowledged writes lost`,
  ].join('\n');
}

function memcachedQuietLine({ figures }: MemcachedDemoResult): string {
  return (
    `memcached: ${count(figures.requests)} requests, ${count(figures.clientErrors)} client errors, ` +
    `outage ${fixed(figures.outageMs)} ms, ${count(figures.wrongValues)} wrong values, ` +
    `${count(figures.lostWrites)} lost writes`
  );
}

function formatsLine(luo: string, formats: HandoverFormats): string {
  return (
    `formats written, read from the handover between the kernels: LUO ${luo}, ` +
    Object.entries(formats)
      .map(([file, compatible]) => `${file} ${compatible}`)
      .join(', ')
  );
}

/** What the new kernel says of the update, from `/sys/kernel/liveupdate/` (docs/kexec-history.md). */
function rememberedLine(version: string, kernel: KernelMemory): string {
  const phases = Object.entries(kernel.previousPhasesMs)
    .map(([name, ms]) => `${name} ${fixed(ms)} ms`)
    .join(', ');
  return [
    `${version} remembers, in /sys/kernel/liveupdate: ${kernel.history}; ` +
      `the previous kernel's side: ${phases}; ${count(kernel.previousLogLines)} lines of its log`,
    ...kernel.failures.map((failure) => `  failed in ${version}: ${failure}`),
  ].join('\n');
}

function checkLines(host: HostCheck, layout: KvCacheLayout): string {
  return [
    `verified every key: ${count(host.cache.verified)} of ${count(layout.keys)} right, ` +
      `${count(host.cache.mismatches)} mismatches (${fixed(host.verifyMs)} ms)`,
    `guest memory: ${count(host.guestMemory.pages)} stamped pages, ` +
      `${count(host.guestMemory.mismatches)} changed`,
  ].join('\n');
}

/** How long the ring holds the NIC's traffic with nobody taking packets out. */
const RING_HEADROOM_MS = ((RING_SIZE - 1) / NIC_PACKETS_PER_SECOND) * 1000;

function nicLines(dma: VmDmaReport): string {
  return [
    `the NIC during the update (the VMM's stores → new VMM done): ${count(dma.packetsSent)} sent, ` +
      `${count(dma.packetsDelivered)} delivered, ${count(dma.packetsDropped)} dropped, ` +
      `${count(dma.iommuFaults)} IOMMU faults`,
    `  ${count(dma.deliveredDuringBlackout)} delivered into guest RAM while the guest was paused; ` +
      `most waiting in the ring at one poll: ${count(dma.maxRingOccupancy)} of ${count(RING_SIZE - 1)}`,
  ].join('\n');
}

function ringLine(ring: GuestRingCheck): string {
  return (
    `the guest's ring since the VM booted: sequence numbers 0…${count(ring.sequences - 1)}, ` +
    `${count(ring.missing)} missing, ${count(ring.outOfOrder)} out of order, ` +
    `${count(ring.badChecksum)} bad checksums; ${count(ring.takenAfterResume)} packets taken after ` +
    `resuming: ${ring.ok ? 'ring intact' : 'RING BROKEN'}`
  );
}

function printPhases(say: (text: string) => void, seen: readonly UpdatedStep[]): void {
  const updates = seen.map((s) => s.update);
  const columns = ['phase', ...updates.map((u) => `${u.from} → ${u.to}`)];
  console.log(heading('the blackout, phase by phase (ms)'));
  const rows: [string, (u: CacheLiveUpdate) => number][] = [
    ['reboot notifiers (LUO freeze, serialize)', (u) => u.phases['reboot-notifiers']],
    ['KHO finalize', (u) => u.phases['kho-finalize']],
    ['kexec handoff (machine)', (u) => u.phases['kexec-handoff']],
    ['boot of the new kernel', (u) => u.phases.boot],
    ['  memory init', (u) => u.phases['memory-init']],
    ['  modules init', (u) => u.phases['modules-init']],
    ['new agent: until it listens (deserialize)', (u) => u.phases['agent-restore']],
    ['cache: hello (manifest, memfd retrieved)', (u) => u.phases.hello],
    ['cache: fetch the memfd (SCM_RIGHTS)', (u) => u.phases.fetch],
    ['mmap', (u) => u.phases.mmap],
    ['first key answered', (u) => u.phases['first-key']],
    ['other (messages, processes end/spawn)', (u) => u.otherMs],
    ['blackout: reboot → first key answered', (u) => u.blackoutMs],
    ['  of which reboot → new kernel running', (u) => u.untilKernelRunningMs],
  ];
  console.log(
    textTable(
      columns,
      rows.map(([label, pick]) => [label, ...updates.map((u) => fixed(pick(u)))]),
    ),
  );

  console.log(heading("the VM's blackout, after the cache's (ms)"));
  const vmRows: [string, (s: UpdatedStep) => number][] = [
    ['reboot → first key answered (the cache first)', (s) => s.update.blackoutMs],
    ['new VMM: hello (agent retrieves RAM, iommufd, NIC)', (s) => s.vm.phases.hello],
    ['fetch the three (SCM_RIGHTS)', (s) => s.vm.phases.fetch],
    ['IOMMU_HWPT_LU_RESTORE', (s) => s.vm.phases['hwpt-restore']],
    ['bind the NIC to the iommufd', (s) => s.vm.phases.bind],
    ['mmap guest RAM, guest polls its ring', (s) => s.vm.phases.resume],
    [
      'other (process spawn, messages)',
      (s) =>
        s.vm.blackoutMs -
        s.update.blackoutMs -
        VM_BLACKOUT_PHASES.reduce((sum, name) => sum + s.vm.phases[name], 0),
    ],
    ['VM blackout: reboot → guest polls', (s) => s.vm.blackoutMs],
    ['guest paused (before reboot → polls again)', (s) => s.vm.guestPausedMs],
    ['then, the guest running: new IOAS, hitless attach', (s) => s.vm.phases['new-ioas']],
    ['  destroy restored HWPT, agent finishes session', (s) => s.vm.phases.finish],
  ];
  console.log(
    textTable(
      columns,
      vmRows.map(([label, pick]) => [label, ...seen.map((s) => fixed(pick(s)))]),
    ),
  );
  say(
    [
      "\nKernel phases come from the kernels' and the machine's trace spans; those of the new agent",
      'and cache (restore … first key) and the new VMM are timed by the caller, around each call',
      "(LUO's own spans, luo-deserialize, luo-retrieve and luo-finish, sit inside them, in",
      "machine.spans()). The cache's blackout runs from the old kernel's reboot span to the new",
      "cache answering its first key, the VM's to the guest's first poll of its ring; the NIC",
      'never stopped, and neither memfd was copied: the new kernel gets their frames by physical',
      'address, and the IOMMU kept translating through the page tables the old kernel left.',
    ].join(' '),
  );
}

let options: DemoOptions;
let layout: KvCacheLayout;
try {
  options = parseDemoOptions(process.argv.slice(2));
  layout = planKvCache(options.mib * MiB, options.keys);
} catch (error) {
  console.error(`${(error as Error).message}\n\n${DEMO_USAGE}`);
  process.exit(2);
}
if (options.help) {
  console.log(DEMO_USAGE);
} else {
  let verdict: DemoVerdict;
  try {
    verdict = await run(options, layout);
  } catch (error) {
    console.error(error);
    verdict = { pass: false, reasons: [`the demo stopped: ${(error as Error).message}`] };
  }
  if (!options.json) console.log(verdict.pass ? '\nPASS' : `\nFAIL: ${verdict.reasons.join('; ')}`);
  if (!verdict.pass) process.exitCode = 1;
}
