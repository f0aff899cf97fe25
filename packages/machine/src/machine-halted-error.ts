const MARKER = Symbol.for('liveupdate.MachineHaltedError');

/**
 * The machine stopped: a kernel panicked (or crashed), and nothing runs until the next
 * `machine.boot()`. `reason` is the panic reason as the kernel gave it.
 */
export class MachineHaltedError extends Error {
  readonly reason: string;

  constructor(reason: string) {
    super(`machine halted: ${reason}`);
    this.name = 'MachineHaltedError';
    this.reason = reason;
    Object.defineProperty(this, MARKER, { value: true });
  }

  static isInstance(value: unknown): value is MachineHaltedError {
    return typeof value === 'object' && value !== null && MARKER in value;
  }
}
