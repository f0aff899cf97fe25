const MARKER = Symbol.for('liveupdate.KernelPanic');

/**
 * Thrown by `panic()` to unwind whatever the kernel was doing. The kernel worker has already told
 * the machine, which halts; nothing may catch and continue from it.
 */
export class KernelPanic extends Error {
  readonly reason: string;

  constructor(reason: string) {
    super(`Kernel panic - not syncing: ${reason}`);
    this.name = 'KernelPanic';
    this.reason = reason;
    Object.defineProperty(this, MARKER, { value: true });
  }

  static isInstance(value: unknown): value is KernelPanic {
    return typeof value === 'object' && value !== null && MARKER in value;
  }
}
