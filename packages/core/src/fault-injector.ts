import type { FileHandler } from './file-handler.js';
import type { FlbOp, LiveUpdateFlb } from './liveupdate-flb.js';

/** The name of a handler op, as the orchestrator calls it: `'preserve'`, `'freeze'`, … */
export type HandlerOp = Exclude<keyof FileHandler, 'compatible'>;

/**
 * Fault injection for handler calls, the LUO counterpart of Linux's `fail_function`: a test
 * module installs one with `LiveUpdateOrchestrator.setFaultInjector()`, which only a kernel booted
 * with `liveupdate.fault_injection=on` allows. Every handler call then asks it first, inside the
 * same wrapper that handles the op's own errors, so an injected failure travels exactly the path a
 * real one would.
 */
export interface FaultInjector {
  /**
   * Called before `handler`'s `op`. Return (or resolve) and the op is called as usual. Throw (or
   * reject) and the op is not called: the throw stands for the op's, so a `KernelError` keeps its
   * errno, anything else becomes `EIO` with a kernel log line, and from `unpreserve`, `unfreeze` or
   * `finish` it is a logged warning after which LUO carries on. Return a promise that never
   * settles and the op hangs: the ioctl (or `reboot`) that called it never returns, and the locks
   * it holds stay held — the session's mutex for preserve, retrieve and finish, the file's lock,
   * and LUO's global lock for reading (every ioctl) or writing (`reboot`'s freeze), so a hung ioctl
   * also blocks any later reboot, while other sessions' ioctls still run.
   */
  beforeCall(handler: FileHandler, op: HandlerOp): void | Promise<void>;

  /**
   * Called before `flb`'s `op`, with the same meaning as {@link FaultInjector.beforeCall}: a
   * `KernelError` fails the op with its errno (a failed `preserve` fails the `PRESERVE_FD` that
   * needed it and rolls back; a failed `retrieve` fails the caller of `flbGetIncoming`, sticky
   * as a refusal of the FLB's own), anything else becomes `EIO`, and from `unpreserve` or
   * `finish` it is a logged warning after which LUO carries on. A promise that never settles
   * hangs the op holding the FLB's lock. Optional: an injector without it leaves FLBs alone.
   */
  beforeFlbCall?(flb: LiveUpdateFlb, op: FlbOp): void | Promise<void>;
}
