import type { KernelToMachine } from '@liveupdate/machine';

/** printk levels (`KERN_EMERG` … `KERN_DEBUG`). */
export const LOGLEVEL = {
  emerg: 0,
  alert: 1,
  crit: 2,
  err: 3,
  warn: 4,
  notice: 5,
  info: 6,
  debug: 7,
} as const;

/** Sends kernel output to the machine; the worker supplies it. */
export type KernelOutput = (message: KernelToMachine) => void;

/** Arguments of a trace event: flat and cloneable. */
export type TraceArgs = Readonly<Record<string, string | number | boolean>>;

/**
 * The kernel log (`dmesg`) and trace events. Every line carries the seconds since this kernel
 * booted; the machine stamps both with its own clock so several kernels make one timeline.
 */
export class KernelLog {
  readonly #output: KernelOutput;
  readonly #bootTime: number;
  readonly #lines: string[] = [];
  /** The last begin and end of each span name (host-clock ms), for the kexec history. */
  readonly #spans = new Map<string, { start: number; end?: number }>();

  constructor(output: KernelOutput, bootTime: number) {
    this.#output = output;
    this.#bootTime = bootTime;
  }

  /** Host wall-clock milliseconds, comparable across workers. */
  static now(): number {
    return performance.timeOrigin + performance.now();
  }

  /** Seconds since boot. */
  uptime(): number {
    return (KernelLog.now() - this.#bootTime) / 1000;
  }

  /** `printk(level, text)`. */
  printk(level: number, text: string): void {
    const time = KernelLog.now();
    const uptime = (time - this.#bootTime) / 1000;
    this.#lines.push(`[${uptime.toFixed(6).padStart(12)}] ${text}`);
    this.#output({ type: 'log', time, uptime, level, text });
  }

  emerg(text: string): void {
    this.printk(LOGLEVEL.emerg, text);
  }
  err(text: string): void {
    this.printk(LOGLEVEL.err, text);
  }
  warn(text: string): void {
    this.printk(LOGLEVEL.warn, text);
  }
  info(text: string): void {
    this.printk(LOGLEVEL.info, text);
  }
  debug(text: string): void {
    this.printk(LOGLEVEL.debug, text);
  }

  /** A trace event: `B`egin or `E`nd of a span named `name`, or an `i`nstant. */
  trace(name: string, phase: 'B' | 'E' | 'i', args?: TraceArgs): void {
    const time = KernelLog.now();
    if (phase === 'B') this.#spans.set(name, { start: time });
    else if (phase === 'E') {
      const span = this.#spans.get(name);
      if (span) span.end = time;
    }
    this.#output({ type: 'trace', time, name, phase, ...(args ? { args } : {}) });
  }

  /** When the last span `name` began and, if it has, ended (host-clock ms). */
  lastSpan(name: string): { readonly start: number; readonly end?: number } | undefined {
    return this.#spans.get(name);
  }

  /** This kernel's log lines so far, formatted like `dmesg`'s. */
  lines(): readonly string[] {
    return this.#lines;
  }

  /** Run `fn` inside a trace span. */
  async span<T>(name: string, fn: () => T | Promise<T>, args?: TraceArgs): Promise<T> {
    this.trace(name, 'B', args);
    try {
      return await fn();
    } finally {
      this.trace(name, 'E');
    }
  }

  /** This kernel's log so far, formatted like `dmesg`. */
  dmesg(): string {
    return this.#lines.join('\n');
  }
}
