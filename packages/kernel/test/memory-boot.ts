import { PAGE_SIZE, type PhysicalMemory } from '@liveupdate/machine';
import { CommandLine } from '../src/command-line.js';
import { KernelLog } from '../src/kernel-log.js';
import { FIRMWARE_BYTES, planMemoryLayout, type MemoryLayout } from '../src/memory-layout.js';
import { MAX_PAGE_ORDER, PageAllocator } from '../src/page-allocator.js';
import { KexecHandover } from '../src/kho/kexec-handover.js';
import { readKhoHandover, type KhoIncoming } from '../src/kho/kho-incoming.js';

/** The memory side of one kernel boot, built in-process on `memory`. */
export interface MemoryBoot {
  readonly memory: PhysicalMemory;
  readonly cmdline: CommandLine;
  readonly layout: MemoryLayout;
  readonly pages: PageAllocator;
  readonly kho: KexecHandover;
  /** The previous kernel's handover, on a boot that came by a KHO kexec. */
  readonly incoming: KhoIncoming | null;
  readonly log: KernelLog;
  /** Every line logged, in order. */
  readonly lines: string[];
}

/**
 * Boot the memory side of a kernel (command line, layout, page allocator, KHO) as `kernel.ts` does,
 * without a worker: from `fdtPhys` when the boot came by a KHO kexec (an incompatible handover
 * throws). For unit tests of what lives on top of it (KHO users, drivers).
 */
export function bootMemory(
  memory: PhysicalMemory,
  cmdlineText: string,
  fdtPhys: number | null = null,
): MemoryBoot {
  const cmdline = new CommandLine(cmdlineText);
  const lines: string[] = [];
  const log = new KernelLog((message) => {
    if (message.type === 'log') lines.push(message.text);
  }, KernelLog.now());
  let incoming: KhoIncoming | null = null;
  if (fdtPhys !== null) {
    const handover = readKhoHandover(memory, fdtPhys, MAX_PAGE_ORDER, FIRMWARE_BYTES / PAGE_SIZE);
    if ('incompatible' in handover) {
      throw new Error(`incompatible handover ${handover.incompatible}`);
    }
    incoming = handover;
  }
  const layout = planMemoryLayout(
    memory,
    cmdline,
    cmdline.bool('kho', false),
    incoming?.scratch ?? null,
  );
  const pages = new PageAllocator(memory, layout, incoming, cmdline, log);
  const kho = new KexecHandover(memory, pages, layout, incoming, cmdline, log);
  return { memory, cmdline, layout, pages, kho, incoming, log, lines };
}
