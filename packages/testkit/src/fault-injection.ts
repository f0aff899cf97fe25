import type { HandlerOp } from '@liveupdate/core';
import { KernelError, isErrnoName, type ErrnoName, type Process } from '@liveupdate/machine';

/** Every handler op a fault can be injected into. */
export const FAULT_OPS: readonly HandlerOp[] = [
  'canPreserve',
  'getId',
  'preserve',
  'unpreserve',
  'freeze',
  'unfreeze',
  'retrieve',
  'canFinish',
  'finish',
];

/**
 * How an injected fault shows:
 * - `'errno'`: the op fails with a `KernelError` carrying {@link FaultSpec.errno}, as a handler
 *   refusing properly would;
 * - `'throw'`: the op throws a plain `Error` (a handler bug): LUO logs it and turns it into `EIO`,
 *   or, from `unpreserve`, `unfreeze` and `finish`, logs it and carries on;
 * - `'hang'`: the op never settles. The ioctl that called it never returns and keeps its locks
 *   (see `FaultInjector` in `@liveupdate/core`): other sessions stay usable, the same session and
 *   any reboot wait forever. A hung `freeze` means `reboot()` never returns and the kexec never
 *   happens. Shut the machine down to end it; the hung call then rejects with `ESRCH`.
 *
 * In every kind the handler's op itself is not called, as with Linux's `fail_function`.
 */
export type FaultKind = 'errno' | 'throw' | 'hang';

/** One fault: the `nth` call of `op` on the handler `compatible` fails as `kind` says. */
export interface FaultSpec {
  /** The `compatible` of the handler to fail; it must be registered. */
  readonly compatible: string;
  readonly op: HandlerOp;
  /** Which call fails, counting calls of `op` on that handler from when the fault is set. Default 1. */
  readonly nth?: number;
  /** Default `'errno'`. */
  readonly kind?: FaultKind;
  /** The errno name of an `'errno'` fault, e.g. `'EIO'`; required for that kind only. */
  readonly errno?: ErrnoName;
}

/** A {@link FaultSpec} with its defaults filled in. */
export type InjectedFault = Required<Omit<FaultSpec, 'errno'>> & { readonly errno?: ErrnoName };

/** What {@link faultStatus} reports. */
export interface FaultStatus {
  /** The fault set now, or `null`. It stays set after it fired, until cleared or replaced. */
  readonly fault: InjectedFault | null;
  /** Whether it fired. */
  readonly fired: boolean;
  /** Calls of each op on each handler since this kernel booted, by `compatible`, then op. */
  readonly calls: Readonly<Record<string, Readonly<Partial<Record<HandlerOp, number>>>>>;
}

const SPEC_KEYS = new Set(['compatible', 'op', 'nth', 'kind', 'errno']);
const KINDS = new Set<string>(['errno', 'throw', 'hang']);

/**
 * Validate a {@link FaultSpec} as it arrives in the kernel, filling in the defaults. `EINVAL`
 * with the reason for anything malformed.
 */
export function checkFaultSpec(value: unknown): InjectedFault {
  if (typeof value !== 'object' || value === null) {
    throw new KernelError('EINVAL', 'testkit: a fault is an object { compatible, op, nth, kind }');
  }
  const spec = value as Record<string, unknown>;
  const unknown = Object.keys(spec).filter((key) => !SPEC_KEYS.has(key));
  if (unknown.length > 0) {
    throw new KernelError(
      'EINVAL',
      `testkit: unknown fault keys ${unknown.join(', ')}; expected ${[...SPEC_KEYS].join(', ')}`,
    );
  }
  const { compatible, op, nth = 1, kind = 'errno', errno } = spec;
  if (typeof compatible !== 'string' || compatible === '') {
    throw new KernelError('EINVAL', 'testkit: fault compatible must be a handler compatible');
  }
  if (!FAULT_OPS.includes(op as HandlerOp)) {
    throw new KernelError(
      'EINVAL',
      `testkit: fault op must be one of ${FAULT_OPS.join(', ')}, got ${String(op)}`,
    );
  }
  if (typeof nth !== 'number' || !Number.isSafeInteger(nth) || nth < 1) {
    throw new KernelError('EINVAL', `testkit: fault nth must be 1 or more, got ${String(nth)}`);
  }
  if (typeof kind !== 'string' || !KINDS.has(kind)) {
    throw new KernelError(
      'EINVAL',
      `testkit: fault kind must be errno, throw or hang, got ${String(kind)}`,
    );
  }
  if (kind === 'errno' && !isErrnoName(errno)) {
    throw new KernelError(
      'EINVAL',
      `testkit: an errno fault needs an errno name such as 'EIO', got ${String(errno)}`,
    );
  }
  if (kind !== 'errno' && errno !== undefined) {
    throw new KernelError('EINVAL', `testkit: a ${kind} fault takes no errno`);
  }
  return {
    compatible,
    op: op as HandlerOp,
    nth,
    kind: kind as FaultKind,
    ...(kind === 'errno' ? { errno: errno as ErrnoName } : {}),
  };
}

/**
 * Make the `nth` call of one handler op fail (see {@link FaultKind}), replacing any fault set
 * before. The kernel must have booted with `liveupdate.fault_injection=on` (`EOPNOTSUPP`
 * otherwise); `ENOENT` when no handler has that `compatible`, `EINVAL` for a malformed spec.
 *
 * @example
 * ```ts
 * const harness = await bootForLiveUpdate({
 *   modules: [handlerModule],
 *   cmdline: 'liveupdate.fault_injection=on',
 * });
 * // ... preserve two files ...
 * await injectFault(harness.process, { compatible: 'note-v1', op: 'freeze', nth: 2, errno: 'EIO' });
 * await harness.liveUpdate(); // rejects with EIO; the first file got unfreeze
 * ```
 */
export async function injectFault(process: Process, spec: FaultSpec): Promise<void> {
  await process.syscall('testkit_fault', 'set', spec);
}

/** Remove the fault set by {@link injectFault}; handler calls run normally again. */
export async function clearFault(process: Process): Promise<void> {
  await process.syscall('testkit_fault', 'clear');
}

/** The fault set now, whether it fired, and how often each handler op was called. */
export async function faultStatus(process: Process): Promise<FaultStatus> {
  return (await process.syscall('testkit_fault', 'status')) as FaultStatus;
}
