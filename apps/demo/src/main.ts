// `pnpm demo`: a key-value cache keeps a million keys in a memfd while the kernel under it is
// live-updated (6.18.0 → 6.18.1, or further with --updates). The cache preserves its memfd in a
// LUO session; after the kexec a new cache process retrieves it, maps it and answers every key
// from the same RAM frames. Prints each phase of the blackout and how long it took, or with
// --json only a report. Exits 1 if any key comes back wrong.
import { Machine } from '@liveupdate/machine';
import { cacheKernelImage } from './cache-kernel-image.js';
import { CacheProcess, CACHE_SESSION, CACHE_TOKEN, FIRST_KEY } from './cache-process.js';
import { DEMO_USAGE, parseDemoOptions, type DemoOptions } from './demo-options.js';
import { planKvCache, type KvCacheCheck, type KvCacheLayout } from './kv-cache.js';
import {
  liveUpdateCache,
  type CacheLiveUpdate,
  type LiveUpdatePhases,
} from './live-update-cache.js';
import { textTable } from './text-table.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** One live update in the JSON report. */
interface LiveUpdateReport {
  readonly from: string;
  readonly to: string;
  readonly blackoutMs: number;
  readonly untilKernelRunningMs: number;
  readonly phases: Readonly<Record<keyof LiveUpdatePhases | 'other', number>>;
  readonly cache: { readonly keys: number; readonly verified: number; readonly mismatches: number };
}

const ms = (value: number): number => Number(value.toFixed(3));
const fixed = (value: number): string => value.toFixed(2);
const count = (value: number): string => value.toLocaleString('en-US');

const heading = (title: string): string =>
  `\n── ${title} ${'─'.repeat(Math.max(0, 96 - title.length))}`;

/** The lines of boot `boot`'s log that tell the live update's story. */
function storyLines(machine: Machine, boot: number): string {
  return machine
    .dmesg(boot)
    .split('\n')
    .filter((line) => /LUO|KHO|memfd|kexec|reboot|Linux version/.test(line))
    .map((line) => `  ${line}`)
    .join('\n');
}

async function run(options: DemoOptions, layout: KvCacheLayout): Promise<boolean> {
  const say = options.json ? () => undefined : console.log;
  // Allocated lazily: only frames the kernels touch cost host memory.
  const ramBytes = Math.max(2, Math.ceil(layout.fileBytes / GiB) + 1) * GiB;
  const versions = Array.from({ length: options.updates + 1 }, (_, n) => `6.18.${n}`);
  const machine = Machine.create({ ramBytes });
  const updates: { update: CacheLiveUpdate; check: KvCacheCheck; verifyMs: number }[] = [];
  try {
    say(
      `liveupdate demo: ${ramBytes / GiB} GiB machine, kernels ${versions.join(' → ')}, ` +
        `cache of ${count(options.keys)} keys in a ${options.mib} MiB memfd`,
    );
    let start = performance.now();
    await machine.boot(cacheKernelImage(versions[0]!));
    say(`\n${versions[0]} cold boot: ${fixed(performance.now() - start)} ms`);
    const created = await CacheProcess.create(machine, layout);
    let cacheProcess = created.cacheProcess;
    say(
      `cache pid ${cacheProcess.process.pid}: memfd_create, ftruncate ${options.mib} MiB, mmap ` +
        `(${cacheProcess.mapping.segments.length} segments): ${fixed(created.timings.memfd)} ms`,
    );
    say(
      `  built ${count(layout.keys)} keys in ${count(layout.slots)} slots of ${layout.recordBytes} B ` +
        `(load ${(layout.keys / layout.slots).toFixed(2)}) through the mapping: ${fixed(created.timings.build)} ms`,
    );

    for (const next of versions.slice(1)) {
      const update = await liveUpdateCache(machine, cacheProcess, cacheKernelImage(next));
      cacheProcess = update.cacheProcess;
      start = performance.now();
      const check = cacheProcess.cache.verifyAll();
      const verifyMs = performance.now() - start;
      updates.push({ update, check, verifyMs });

      say(heading(`live update ${update.from} → ${update.to}`));
      say('before the blackout, while the cache serves:');
      say(
        `  PRESERVE_FD of the memfd as token ${CACHE_TOKEN} in session "${CACHE_SESSION}": ${fixed(update.preserveMs)} ms`,
      );
      say(
        `  kexec_load ${update.to} (its worker starts and imports its modules): ${fixed(update.kexecLoadMs)} ms`,
      );
      say(`then reboot(LINUX_REBOOT_CMD_KEXEC); from the kernels' logs:`);
      say(storyLines(machine, machine.bootCount - 2));
      say(storyLines(machine, machine.bootCount - 1));
      say(
        `new cache pid ${cacheProcess.process.pid}: retrieved "${CACHE_SESSION}" and the memfd, mapped it ` +
          `(${cacheProcess.mapping.segments.length} segments), answered key ${FIRST_KEY}: ` +
          `${update.firstKeyOk ? 'right value' : 'WRONG VALUE'}`,
      );
      say(
        `verified every key: ${count(check.verified)} of ${count(layout.keys)} right, ` +
          `${count(check.mismatches)} mismatches (${fixed(verifyMs)} ms)`,
      );
    }

    if (options.json) {
      const liveUpdates: LiveUpdateReport[] = updates.map(({ update, check }) => ({
        from: update.from,
        to: update.to,
        blackoutMs: ms(update.blackoutMs),
        untilKernelRunningMs: ms(update.untilKernelRunningMs),
        phases: Object.fromEntries(
          Object.entries({ ...update.phases, other: update.otherMs }).map(([name, value]) => [
            name,
            ms(value),
          ]),
        ) as LiveUpdateReport['phases'],
        cache: { keys: layout.keys, verified: check.verified, mismatches: check.mismatches },
      }));
      console.log(JSON.stringify({ liveUpdates }, null, 2));
    } else {
      printPhases(updates.map((u) => u.update));
    }
  } finally {
    await machine.shutdown();
  }
  return updates.every(({ update, check }) => update.firstKeyOk && check.mismatches === 0);
}

function printPhases(updates: readonly CacheLiveUpdate[]): void {
  console.log(heading('the blackout, phase by phase (ms)'));
  const rows: [string, (u: CacheLiveUpdate) => number][] = [
    ['reboot notifiers (LUO freeze, serialize)', (u) => u.phases['reboot-notifiers']],
    ['KHO finalize', (u) => u.phases['kho-finalize']],
    ['kexec handoff (machine)', (u) => u.phases['kexec-handoff']],
    ['boot of the new kernel', (u) => u.phases.boot],
    ['  memory init', (u) => u.phases['memory-init']],
    ['  modules init', (u) => u.phases['modules-init']],
    ['open /dev/liveupdate (deserialize)', (u) => u.phases['liveupdate-open']],
    ['retrieve session', (u) => u.phases['retrieve-session']],
    ['retrieve fd (memfd)', (u) => u.phases['retrieve-fd']],
    ['finish session', (u) => u.phases.finish],
    ['mmap', (u) => u.phases.mmap],
    ['first key answered', (u) => u.phases['first-key']],
    ['other (messages, processes end/spawn)', (u) => u.otherMs],
    ['blackout: reboot → first key answered', (u) => u.blackoutMs],
    ['  of which reboot → new kernel running', (u) => u.untilKernelRunningMs],
  ];
  console.log(
    textTable(
      ['phase', ...updates.map((u) => `${u.from} → ${u.to}`)],
      rows.map(([label, pick]) => [label, ...updates.map((u) => fixed(pick(u)))]),
    ),
  );
  console.log(
    [
      '',
      "Kernel phases come from the kernels' and the machine's trace spans; those of the new cache",
      "process (open … first key) are timed by the caller, around each syscall (LUO's own spans,",
      'luo-deserialize, luo-retrieve and luo-finish, sit inside them, in machine.spans()). The',
      "blackout runs from the old kernel's reboot span to the new cache answering its first key;",
      'the memfd itself is never copied: the new kernel gets its frames by physical address.',
    ].join('\n'),
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
} else if (!(await run(options, layout))) {
  process.exitCode = 1;
}
