import { KernelError, PhysicalMemory, hex } from '@liveupdate/machine';
import type { KexecHandover } from '../kho/kexec-handover.js';
import { KernelLog } from '../kernel-log.js';
import type { ServiceKey } from '../kernel-module.js';
import type { KexecTarget } from '../kexec-target.js';
import type { Vfs } from '../vfs/vfs.js';
import {
  KEXEC_HISTORY_COMPATIBLE,
  KEXEC_HISTORY_PHASES,
  KEXEC_HISTORY_SUBTREE,
  decodeKexecHistory,
  encodeKexecHistory,
  logTail,
  type KexecHistory,
  type KexecHistoryPhase,
  type PhaseTimes,
} from './kexec-history-abi.js';

/** Where the history shows: `/sys/kernel/liveupdate/…`. */
export const KEXEC_HISTORY_SYSFS = '/sys/kernel/liveupdate';
/** Failures kept for {@link KexecHistoryService.recordFailure}'s file; older ones are dropped. */
export const KEXEC_HISTORY_FAILURES_MAX = 256;

/** How this kernel came up, as far as the history tells. */
export type KexecHistoryStatus =
  | { readonly kind: 'none' }
  | { readonly kind: 'received'; readonly history: KexecHistory }
  | { readonly kind: 'absent' }
  | { readonly kind: 'damaged'; readonly reason: string };

/** The kernel's {@link KexecHistoryService}, for modules (`ctx.services.get`). */
export const KEXEC_HISTORY_SERVICE: ServiceKey<KexecHistoryService> = Symbol.for(
  'liveupdate.kernel.kexec-history',
);

/**
 * The kernel remembers the update that brought it up: the previous kernel's version, the number
 * of live updates since the cold boot, the previous kernel's log tail and the times of its update
 * phases — handed over, like everything else, in preserved memory (the KHO subtree
 * {@link KEXEC_HISTORY_SUBTREE}, format {@link KEXEC_HISTORY_COMPATIBLE}) and shown to processes
 * as files under {@link KEXEC_HISTORY_SYSFS}. It also keeps the reasons of this kernel's failed
 * live-update operations (LUO records every refused retrieve and finish), in `failures`.
 *
 * The incoming history is untrusted input and only diagnostics: a damaged one is logged and shown
 * as damaged (`history` says why), never a panic, and nothing of it is used.
 */
export class KexecHistoryService {
  readonly #kho: KexecHandover;
  readonly #memory: PhysicalMemory;
  readonly #log: KernelLog;
  readonly #version: string;
  readonly #status: KexecHistoryStatus;
  readonly #failures: string[] = [];
  #failuresDropped = 0;
  #published: number | undefined;

  constructor(kho: KexecHandover, memory: PhysicalMemory, log: KernelLog, version: string) {
    this.#kho = kho;
    this.#memory = memory;
    this.#log = log;
    this.#version = version;
    this.#status = this.#readIncoming();
  }

  /** What the previous kernel handed over about itself. */
  get status(): KexecHistoryStatus {
    return this.#status;
  }

  /**
   * Live updates since the cold boot (0 after a cold boot); `undefined` when it is not known:
   * the incoming history is absent or damaged, or an earlier one was (the count stays unknown
   * until the next cold boot).
   */
  get kexecCount(): number | undefined {
    switch (this.#status.kind) {
      case 'none':
        return 0;
      case 'received':
        return this.#status.history.kexecCount;
      default:
        return undefined;
    }
  }

  /**
   * Keep `reason` (one line: which session, token, compatible and why) for the `failures` file.
   * The caller logs it too; this keeps it readable after the log has moved on.
   */
  recordFailure(reason: string): void {
    const line = String(reason).replaceAll('\n', ' ');
    this.#failures.push(`[${this.#log.uptime().toFixed(6).padStart(12)}] ${line}`);
    if (this.#failures.length > KEXEC_HISTORY_FAILURES_MAX) {
      this.#failures.shift();
      this.#failuresDropped++;
    }
  }

  /** The failures recorded so far, oldest first. */
  get failures(): readonly string[] {
    return this.#failures;
  }

  /** Register the files under {@link KEXEC_HISTORY_SYSFS}. */
  registerFiles(vfs: Vfs): void {
    const at = (name: string): string => `${KEXEC_HISTORY_SYSFS}/${name}`;
    vfs.registerSysfsFile(at('history'), () => `${this.#describe()}\n`);
    vfs.registerSysfsFile(at('failures'), () =>
      [
        ...(this.#failuresDropped > 0 ? [`(${this.#failuresDropped} older failures dropped)`] : []),
        ...this.#failures,
      ]
        .map((line) => `${line}\n`)
        .join(''),
    );
    const count = this.kexecCount;
    if (count !== undefined) vfs.registerSysfsFile(at('kexec_count'), () => `${count}\n`);
    if (this.#status.kind !== 'received') return;
    const { history } = this.#status;
    vfs.registerSysfsFile(at('previous/version'), () => `${history.version}\n`);
    vfs.registerSysfsFile(at('previous/log'), () => history.log);
    vfs.registerSysfsFile(at('previous/phases'), () => formatPhases(history.phases));
  }

  /**
   * At a kexec, after the reboot notifiers and before KHO's finalize: hand the next kernel this
   * kernel's history, when the loaded kernel reads {@link KEXEC_HISTORY_COMPATIBLE} (an older
   * one is handed nothing; it shows the history as absent). A failure is logged and the kexec
   * goes on without a history: it is diagnostics, not state.
   */
  publish(target: KexecTarget | undefined): void {
    if (!this.#kho.enabled || (target && !target.reads.has(KEXEC_HISTORY_COMPATIBLE))) return;
    const now = KernelLog.now();
    const phases: Partial<Record<KexecHistoryPhase, PhaseTimes>> = {};
    for (const name of KEXEC_HISTORY_PHASES) {
      const span = this.#log.lastSpan(name);
      if (!span) continue;
      const end = span.end !== undefined && span.end >= span.start ? span.end : now;
      phases[name] = { start: Math.floor(span.start * 1000), end: Math.ceil(end * 1000) };
    }
    const count = this.kexecCount;
    const next = count === undefined ? undefined : count + 1;
    this.#log.info(`kexec: handing over history: ${this.#version}, ${describeUpdate(next)}`);
    const bytes = encodeKexecHistory({
      kexecCount: next,
      version: this.#version,
      log: logTail(this.#log.lines()),
      phases,
    });
    let phys: number | undefined;
    try {
      phys = this.#kho.allocPreserve(bytes.length);
      this.#memory.write(phys, bytes);
      this.#kho.addSubtree(KEXEC_HISTORY_SUBTREE, phys, bytes.length);
      this.#published = phys;
    } catch (error) {
      if (phys !== undefined) this.#kho.unpreserveFree(phys);
      this.#log.warn(`kexec: no history handed over: ${(error as Error).message}`);
    }
  }

  /** Undo {@link publish} when the kexec is aborted after it. */
  unpublish(): void {
    if (this.#published === undefined) return;
    this.#kho.removeSubtree(this.#published);
    this.#kho.unpreserveFree(this.#published);
    this.#published = undefined;
  }

  #readIncoming(): KexecHistoryStatus {
    if (!this.#kho.isKhoBoot) return { kind: 'none' };
    let blob;
    try {
      blob = this.#kho.retrieveSubtree(KEXEC_HISTORY_SUBTREE);
    } catch (error) {
      if (KernelError.isInstance(error) && error.code === 'ENOENT') {
        this.#log.info(
          `kexec: the previous kernel handed over no ${KEXEC_HISTORY_SUBTREE} (it does not write ${KEXEC_HISTORY_COMPATIBLE})`,
        );
        return { kind: 'absent' };
      }
      throw error;
    }
    let history: KexecHistory;
    try {
      history = decodeKexecHistory(this.#memory.read(blob.phys, blob.size), KernelLog.now() * 1000);
    } catch (error) {
      // Nothing of it is used, and its memory is not freed on the word of a damaged blob: it
      // stays reserved and is reported with the unclaimed memory.
      const reason = `${KEXEC_HISTORY_SUBTREE} at ${hex(blob.phys)}+${blob.size}: ${(error as Error).message}`;
      this.#log.err(`kexec: the incoming history is damaged and not used: ${reason}`);
      return { kind: 'damaged', reason };
    }
    this.#log.info(`kexec: ${describeUpdate(history.kexecCount)}, from ${history.version}`);
    try {
      this.#kho.restoreFree(blob.phys);
    } catch (error) {
      this.#log.err(`kexec: ${KEXEC_HISTORY_SUBTREE} blob: ${(error as Error).message}`);
    }
    return { kind: 'received', history };
  }

  #describe(): string {
    switch (this.#status.kind) {
      case 'none':
        return 'none: a cold boot (or a kexec without KHO)';
      case 'received':
        return `received: ${describeUpdate(this.#status.history.kexecCount)}, from ${this.#status.history.version}`;
      case 'absent':
        return `absent: the previous kernel handed over no ${KEXEC_HISTORY_COMPATIBLE}`;
      case 'damaged':
        return `damaged: ${this.#status.reason}`;
    }
  }
}

function formatPhases(phases: KexecHistory['phases']): string {
  return KEXEC_HISTORY_PHASES.filter((name) => phases[name])
    .map((name) => {
      const { start, end } = phases[name]!;
      return `${name} ${start} ${end}\n`;
    })
    .join('');
}

/** `update N since cold boot`, or what is known when an earlier history was lost. */
function describeUpdate(count: number | undefined): string {
  return count === undefined
    ? 'update ? since cold boot (not known: an earlier kernel handed over no history, or a damaged one)'
    : `update ${count} since cold boot`;
}
