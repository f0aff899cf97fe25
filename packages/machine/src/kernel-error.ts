import type { WireError } from './boot-protocol.js';
import { ERRNO, isErrnoName, type ErrnoName } from './errno.js';

const MARKER = Symbol.for('liveupdate.KernelError');

/**
 * The one error type for kernel errors, on both sides of the syscall boundary: kernel code throws
 * it with an errno name, and a failed syscall rejects with it in userspace (`code: 'EEXIST'`,
 * `errno: 17`, like Node's `SystemError`).
 *
 * Use {@link KernelError.isInstance} rather than `instanceof`: a process and a kernel worker, or two
 * copies of this package, each have their own class object.
 */
export class KernelError extends Error {
  /** The errno name, e.g. `'EBUSY'`. */
  readonly code: ErrnoName;
  /** The Linux errno number for {@link code}, e.g. 16. */
  readonly errno: number;
  /** The syscall that failed, when the error reached userspace through one. */
  readonly syscall: string | undefined;

  constructor(code: ErrnoName, message?: string, options?: { cause?: unknown; syscall?: string }) {
    super(
      message ? `${code}: ${message}` : code,
      options?.cause ? { cause: options.cause } : undefined,
    );
    this.name = 'KernelError';
    this.code = code;
    this.errno = ERRNO[code];
    this.syscall = options?.syscall;
    Object.defineProperty(this, MARKER, { value: true });
  }

  /** Whether `value` is a KernelError from any copy of this package. */
  static isInstance(value: unknown): value is KernelError {
    return typeof value === 'object' && value !== null && MARKER in value;
  }
}

/**
 * The error a process gets for a syscall the kernel failed with `error` (as it crossed the worker
 * boundary): its errno (`EIO` for a code that is not one), and the kernel's message without the
 * errno name it starts with.
 */
export function syscallError(error: WireError, syscall: string): KernelError {
  const code = isErrnoName(error.code) ? error.code : 'EIO';
  const message = error.message.startsWith(`${code}: `)
    ? error.message.slice(code.length + 2)
    : error.message;
  return new KernelError(code, message, { syscall });
}
