import { KEXEC_HISTORY_PHASES, KEXEC_HISTORY_SYSFS } from '@liveupdate/kernel';
import { KernelError, O_RDONLY, type Machine, type Process } from '@liveupdate/machine';

/**
 * What the running kernel remembers of the update that brought it up, read as any process reads
 * it: the files under `/sys/kernel/liveupdate/` (see docs/kexec-history.md).
 */
export interface KernelMemory {
  /** Its `history` line: `received: …`, `none: …`, `absent: …` or `damaged: …`. */
  readonly history: string;
  /** Live updates since the cold boot, or `null` when the history was lost. */
  readonly kexecCount: number | null;
  /** The previous kernel's version, or `null` without a history. */
  readonly previousVersion: string | null;
  /** How long each phase of the previous kernel's side of the update took, in ms. */
  readonly previousPhasesMs: Readonly<Record<string, number>>;
  /** The lines of the previous kernel's log it handed over. */
  readonly previousLogLines: number;
  /** The live-update operations that failed in this kernel so far. */
  readonly failures: readonly string[];
}

const decoder = new TextDecoder();

/** The whole of a sysfs file, or `null` when it does not exist (`ENOENT`). */
async function readFile(process: Process, path: string): Promise<string | null> {
  let fd: number;
  try {
    fd = await process.open(path, O_RDONLY);
  } catch (error) {
    if (KernelError.isInstance(error) && error.code === 'ENOENT') return null;
    throw error;
  }
  try {
    const chunks: Uint8Array[] = [];
    for (;;) {
      const chunk = await process.read(fd, 65536);
      if (chunk.length === 0) break;
      chunks.push(chunk);
    }
    return decoder.decode(Buffer.concat(chunks));
  } finally {
    await process.close(fd);
  }
}

/** Read what the running kernel of `machine` remembers, from a process of its own. */
export async function readKernelMemory(machine: Machine): Promise<KernelMemory> {
  const process = machine.spawn();
  try {
    const at = (name: string) => readFile(process, `${KEXEC_HISTORY_SYSFS}/${name}`);
    const count = await at('kexec_count');
    const phases = (await at('previous/phases')) ?? '';
    const previousPhasesMs: Record<string, number> = {};
    for (const line of phases.split('\n')) {
      const [name, start, end] = line.split(' ');
      if (name && (KEXEC_HISTORY_PHASES as readonly string[]).includes(name)) {
        previousPhasesMs[name] = (Number(end) - Number(start)) / 1000;
      }
    }
    const log = (await at('previous/log')) ?? '';
    return {
      history: ((await at('history')) ?? '').trim(),
      kexecCount: count === null ? null : Number(count.trim()),
      previousVersion: (await at('previous/version'))?.trim() ?? null,
      previousPhasesMs,
      previousLogLines: log.split('\n').filter((line) => line.length > 0).length,
      failures: ((await at('failures')) ?? '').split('\n').filter((line) => line.length > 0),
    };
  } finally {
    await process.exit();
  }
}
