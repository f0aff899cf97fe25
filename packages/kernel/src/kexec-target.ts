import { KernelError } from '@liveupdate/machine';
import type { KernelLog } from './kernel-log.js';
import {
  NT_HANDOVER_READS,
  decodeKernelNotes,
  readHandoverReads,
  type KernelNote,
} from './kexec-notes.js';

/**
 * The kernel loaded with `kexec_load`, as this kernel read it from the image: its version,
 * command line and notes. Data only: nothing of the next kernel's code or objects.
 */
export interface KexecTarget {
  /** `uname -r` of the loaded kernel. */
  readonly version: string;
  readonly cmdline: string;
  readonly notes: readonly KernelNote[];
  /**
   * Every handover format (compatible string) the loaded kernel says it reads, mapped to the
   * owner of the note that says so (`"Linux"` or a module's name).
   */
  readonly reads: ReadonlyMap<string, string>;
}

/**
 * A check that the loaded kernel can read what this kernel would hand over, run by
 * `reboot(LINUX_REBOOT_CMD_KEXEC)` before anything irreversible, and by {@link KexecControl.check}.
 */
export interface KexecCheck {
  /** Who checks, for the log: `"liveupdate"`, `"iommu"`. */
  readonly name: string;
  /**
   * What `target` could not read, one line each, naming the thing and its format (`session "vm0"
   * token 7: memfd-v3`). Empty when it can read everything. Must change nothing.
   */
  check(target: KexecTarget): readonly string[] | Promise<readonly string[]>;
}

/** The result of {@link KexecControl.check}. */
export interface KexecCheckResult {
  /** The loaded kernel's version. */
  readonly version: string;
  /** Each problem, prefixed with the name of the check that found it. Empty: it can read all. */
  readonly problems: readonly string[];
}

/** What a module sees of kexec: the loaded kernel and the checks before a kexec. */
export interface KexecControl {
  /** The kernel loaded with `kexec_load`, or `undefined` when none is. */
  target(): KexecTarget | undefined;
  /**
   * This kernel, as its own image's notes describe it: what a kernel that `kexec_load`s this
   * image will be told it reads. A handler whose formats are missing here was left out of its
   * module's `reads`.
   */
  self(): KexecTarget;
  /** Add a check run before every kexec (and by {@link check}). */
  registerCheck(check: KexecCheck): void;
  /**
   * Run every check against the loaded kernel (`ENOENT` when none is loaded). A check that
   * throws counts as a problem: a kexec is refused when a check cannot tell.
   */
  check(): Promise<KexecCheckResult>;
}

/** Build a {@link KexecTarget} from what the machine read of a loaded image. */
export function kexecTarget(version: string, cmdline: string, notesBlob: Uint8Array): KexecTarget {
  const notes = decodeKernelNotes(notesBlob);
  const reads = new Map<string, string>();
  for (const note of notes) {
    if (note.type !== NT_HANDOVER_READS) continue;
    for (const compatible of readHandoverReads(note)) {
      if (!reads.has(compatible)) reads.set(compatible, note.owner);
    }
  }
  return { version, cmdline, notes, reads };
}

/** The kernel's {@link KexecControl}. */
export class KexecChecks implements KexecControl {
  readonly #checks: KexecCheck[] = [];
  readonly #log: KernelLog;
  readonly #target: () => KexecTarget | undefined;
  readonly #self: KexecTarget;

  constructor(log: KernelLog, self: KexecTarget, target: () => KexecTarget | undefined) {
    this.#log = log;
    this.#self = self;
    this.#target = target;
  }

  self(): KexecTarget {
    return this.#self;
  }

  target(): KexecTarget | undefined {
    return this.#target();
  }

  registerCheck(check: KexecCheck): void {
    if (typeof check?.check !== 'function' || typeof check.name !== 'string') {
      throw new KernelError('EINVAL', 'kexec: a check needs a name and a check function');
    }
    this.#checks.push(check);
  }

  async check(): Promise<KexecCheckResult> {
    const target = this.#target();
    if (!target) throw new KernelError('ENOENT', 'kexec: no kernel image is loaded');
    const problems: string[] = [];
    for (const check of this.#checks) {
      try {
        for (const problem of await check.check(target)) problems.push(`${check.name}: ${problem}`);
      } catch (error) {
        problems.push(
          `${check.name}: the check failed: ${(error as Error)?.message ?? String(error)}`,
        );
      }
    }
    return { version: target.version, problems };
  }

  /**
   * The check of `reboot(LINUX_REBOOT_CMD_KEXEC)`: log each problem and refuse with `ENOEXEC`
   * when there is one.
   */
  async assertReadable(): Promise<void> {
    const { version, problems } = await this.check();
    if (problems.length === 0) return;
    for (const problem of problems) this.#log.err(`kexec: ${version} cannot read ${problem}`);
    throw new KernelError(
      'ENOEXEC',
      `kexec: the loaded kernel ${version} cannot read ${problems.length} thing${problems.length === 1 ? '' : 's'} this kernel would hand over (see the kernel log); nothing was frozen`,
    );
  }
}
