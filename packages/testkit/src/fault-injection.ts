import type { FlbOp, HandlerOp } from '@liveupdate/core';
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
  'preservedFrames',
];

/** Every FLB op a fault can be injected into (a {@link FaultSpec} with `flb`). */
export const FLB_FAULT_OPS: readonly FlbOp[] = ['preserve', 'unpreserve', 'retrieve', 'finish'];

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

/** How a fault fires, whatever op it targets. */
interface FaultTrigger {
  /** Which call fails, counting calls of `op` on the target from when the fault is set. Default 1. */
  readonly nth?: number;
  /** Default `'errno'`. */
  readonly kind?: FaultKind;
  /** The errno name of an `'errno'` fault, e.g. `'EIO'`; required for that kind only. */
  readonly errno?: ErrnoName;
}

/** A fault in a file handler op: the `nth` call of `op` on the handler `compatible`. */
export interface HandlerFaultSpec extends FaultTrigger {
  /** The `compatible` of the handler to fail; it must be registered. */
  readonly compatible: string;
  readonly op: HandlerOp;
}

/**
 * A fault in an FLB op: the `nth` call of `op` on the FLB whose compatible is `flb`. Its errno
 * travels as the FLB's own would: a failed `preserve` fails the `PRESERVE_FD` that needed the FLB
 * (rolled back, nothing left preserved), a failed `retrieve` fails `flbGetIncoming` and with it
 * the `RETRIEVE_FD` of every file that depends on the FLB (sticky, as a refusal), and a failed
 * `unpreserve` or `finish` is logged and LUO carries on.
 */
export interface FlbFaultSpec extends FaultTrigger {
  /** The compatible of the FLB to fail (e.g. `"iommu-v1"`); it must be registered. */
  readonly flb: string;
  readonly op: FlbOp;
}

/** One fault: the `nth` call of `op` on a handler or an FLB fails as `kind` says. */
export type FaultSpec = HandlerFaultSpec | FlbFaultSpec;

type Filled<T extends FaultSpec> = Required<Omit<T, 'errno'>> & { readonly errno?: ErrnoName };

/** A {@link FaultSpec} with its defaults filled in. */
export type InjectedFault = Filled<HandlerFaultSpec> | Filled<FlbFaultSpec>;

/** What {@link faultStatus} reports. */
export interface FaultStatus {
  /** The fault set now, or `null`. It stays set after it fired, until cleared or replaced. */
  readonly fault: InjectedFault | null;
  /** Whether it fired. */
  readonly fired: boolean;
  /** Calls of each op on each handler since this kernel booted, by `compatible`, then op. */
  readonly calls: Readonly<Record<string, Readonly<Partial<Record<HandlerOp, number>>>>>;
  /** Calls of each op on each FLB since this kernel booted, by the FLB's compatible, then op. */
  readonly flbCalls: Readonly<Record<string, Readonly<Partial<Record<FlbOp, number>>>>>;
}

const SPEC_KEYS = new Set(['compatible', 'flb', 'op', 'nth', 'kind', 'errno']);
const KINDS = new Set<string>(['errno', 'throw', 'hang']);

/**
 * Validate a {@link FaultSpec} as it arrives in the kernel, filling in the defaults. `EINVAL`
 * with the reason for anything malformed.
 */
export function checkFaultSpec(value: unknown): InjectedFault {
  if (typeof value !== 'object' || value === null) {
    throw new KernelError(
      'EINVAL',
      'testkit: a fault is an object { compatible or flb, op, nth, kind }',
    );
  }
  const spec = value as Record<string, unknown>;
  const unknown = Object.keys(spec).filter((key) => !SPEC_KEYS.has(key));
  if (unknown.length > 0) {
    throw new KernelError(
      'EINVAL',
      `testkit: unknown fault keys ${unknown.join(', ')}; expected ${[...SPEC_KEYS].join(', ')}`,
    );
  }
  const { compatible, flb, op, nth = 1, kind = 'errno', errno } = spec;
  const isFlb = 'flb' in spec;
  if (isFlb === 'compatible' in spec) {
    throw new KernelError(
      'EINVAL',
      'testkit: a fault names either a handler (compatible) or an FLB (flb), not both',
    );
  }
  const target = isFlb ? flb : compatible;
  if (typeof target !== 'string' || target === '') {
    throw new KernelError(
      'EINVAL',
      `testkit: fault ${isFlb ? 'flb must be an FLB' : 'compatible must be a handler'} compatible`,
    );
  }
  const ops: readonly string[] = isFlb ? FLB_FAULT_OPS : FAULT_OPS;
  if (!ops.includes(op as string)) {
    throw new KernelError(
      'EINVAL',
      `testkit: ${isFlb ? 'an FLB' : 'a handler'} fault op must be one of ${ops.join(', ')}, got ${String(op)}`,
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
  const trigger = {
    nth,
    kind: kind as FaultKind,
    ...(kind === 'errno' ? { errno: errno as ErrnoName } : {}),
  };
  return isFlb
    ? { flb: target, op: op as FlbOp, ...trigger }
    : { compatible: target, op: op as HandlerOp, ...trigger };
}

/**
 * Make the `nth` call of one handler op, or of one FLB op, fail (see {@link FaultKind}),
 * replacing any fault set before. The kernel must have booted with
 * `liveupdate.fault_injection=on` (`EOPNOTSUPP` otherwise); `ENOENT` when no handler (or FLB) has
 * that compatible, `EINVAL` for a malformed spec.
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
 *
 * // The first preserved file of a handler linked to the FLB fails with ENOMEM, nothing kept:
 * await injectFault(harness.process, { flb: 'iommu-v1', op: 'preserve', errno: 'ENOMEM' });
 * ```
 */
export async function injectFault(process: Process, spec: FaultSpec): Promise<void> {
  await process.syscall('testkit_fault', 'set', spec);
}

/** Remove the fault set by {@link injectFault}; handler calls run normally again. */
export async function clearFault(process: Process): Promise<void> {
  await process.syscall('testkit_fault', 'clear');
}

/** The fault set now, whether it fired, and how often each handler and FLB op was called. */
export async function faultStatus(process: Process): Promise<FaultStatus> {
  return (await process.syscall('testkit_fault', 'status')) as FaultStatus;
}
