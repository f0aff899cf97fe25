// `pnpm demo`: boot a machine, kexec it twice (6.18.0 → 6.18.1 → 6.18.2) while a guestbook kept
// in a KHO-preserved folio collects one entry per kernel, then print every kernel's dmesg, the
// book as the last kernel reads it, and how long each phase of the live updates took.
//
// Until LUO lands this shows the layer below it: Kexec HandOver passing frames between kernels.
import { createKernelImage } from '@liveupdate/kernel';
import { LINUX_REBOOT_CMD_KEXEC, Machine } from '@liveupdate/machine';
import type { GuestbookContents } from './guestbook-module.js';
import { phaseTimings, type PhaseTimings } from './phase-timings.js';
import { textTable } from './text-table.js';

// Allocated lazily: only the frames the kernels touch cost host memory.
const RAM_BYTES = 2 * 1024 ** 3;
const VERSIONS = ['6.18.0', '6.18.1', '6.18.2'] as const;
const GUESTBOOK_MODULE = new URL('./guestbook-module.js', import.meta.url).href;

const image = (version: string) =>
  createKernelImage({ version, cmdline: 'kho=on', modules: [GUESTBOOK_MODULE] });

function heading(title: string): void {
  console.log(`\n── ${title} ${'─'.repeat(Math.max(0, 96 - title.length))}`);
}

const machine = Machine.create({ ramBytes: RAM_BYTES });
try {
  console.log(
    `liveupdate demo: ${RAM_BYTES / 1024 ** 3} GiB machine, kernels ${VERSIONS.join(' → ')}, KHO on`,
  );
  await machine.boot(image(VERSIONS[0]));
  for (const next of VERSIONS.slice(1)) {
    const proc = machine.spawn();
    await proc.kexecLoad(image(next));
    // Resolves once the new kernel runs; `proc` has ended with the old kernel.
    await proc.reboot(LINUX_REBOOT_CMD_KEXEC);
  }
  const book = (await machine.spawn().syscall('guestbook_read')) as GuestbookContents;

  for (let boot = 0; boot < machine.bootCount; boot++) {
    heading(`dmesg of kernel ${VERSIONS[boot]} (boot ${boot})`);
    console.log(machine.dmesg(boot));
  }

  heading(`guestbook, read through guestbook_read in ${machine.kernelVersion}`);
  console.log(
    `folio 0x${book.phys.toString(16)}, order ${book.order}, ${book.text.length} characters:\n`,
  );
  console.log(book.text.trimEnd().replace(/^/gm, '  '));
  const signers = book.text
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split(' ')[0]);
  const crossed = signers.join() === VERSIONS.join();
  console.log(
    crossed
      ? `\nEvery kernel's entry is there: the bytes written by ${VERSIONS[0]} crossed two kexecs.`
      : `\nUnexpected signers ${signers.join(', ')}: the book did not survive the kexecs.`,
  );
  if (!crossed) process.exitCode = 1;

  heading('timings (ms, from machine.timeline)');
  const timings = VERSIONS.map((_, boot) => phaseTimings(machine, boot));
  const rows: [string, (t: PhaseTimings) => number | null][] = [
    ['reboot notifiers', (t) => t.rebootNotifiers],
    ['KHO finalize', (t) => t.khoFinalize],
    ['kexec handoff (machine)', (t) => t.kexecHandoff],
    ['boot', (t) => t.kernelBoot],
    ['  memory init', (t) => t.memoryInit],
    ['  modules init', (t) => t.modulesInit],
    ['total blackout', (t) => t.blackout],
  ];
  const columns = timings.map((t) =>
    t.boot === 0 ? `${t.version} cold boot` : `→ ${t.version} (kexec)`,
  );
  console.log(
    textTable(
      ['phase', ...columns],
      rows.map(([label, pick]) => [
        label,
        ...timings.map((t) => {
          const value = pick(t);
          return value === null ? '–' : value.toFixed(2);
        }),
      ]),
    ),
  );
  console.log(
    '\nblackout: the old kernel starts its reboot → the machine sees the new kernel running. It\n' +
      'covers the phases above plus the messages between the kernels and the machine.',
  );
} finally {
  await machine.shutdown();
}
