import type { FaultInjector, FileHandler, FlbOp, HandlerOp, LiveUpdateFlb } from '@liveupdate/core';
import { KernelError, type KernelLog } from '@liveupdate/kernel';
import type { FaultStatus, InjectedFault } from './fault-injection.js';

/**
 * The testkit module's fault injector, installed in LUO when the kernel booted with
 * `liveupdate.fault_injection=on`: counts every handler and FLB call, and fails the one the
 * current fault names. Lives in the kernel; userspace drives it through the `testkit_fault` syscall.
 */
export class TestkitFaultInjector implements FaultInjector {
  readonly #log: KernelLog;
  readonly #calls = new Map<string, Map<HandlerOp, number>>();
  readonly #flbCalls = new Map<string, Map<FlbOp, number>>();
  #fault: InjectedFault | null = null;
  #matched = 0;
  #fired = false;

  constructor(log: KernelLog) {
    this.#log = log;
  }

  /** Set `fault` (replacing the previous one), counting its calls from zero. */
  set(fault: InjectedFault | null): void {
    this.#fault = fault;
    this.#matched = 0;
    this.#fired = false;
  }

  get status(): FaultStatus {
    return {
      fault: this.#fault,
      fired: this.#fired,
      calls: countsOf(this.#calls),
      flbCalls: countsOf(this.#flbCalls),
    };
  }

  beforeCall(handler: FileHandler, op: HandlerOp): void | Promise<void> {
    count(this.#calls, handler.compatible, op);
    const fault = this.#fault;
    if (!fault || !('compatible' in fault) || fault.compatible !== handler.compatible) return;
    return this.#maybeFire(fault, op, `${handler.compatible}: ${op}`);
  }

  beforeFlbCall(flb: LiveUpdateFlb, op: FlbOp): void | Promise<void> {
    count(this.#flbCalls, flb.compatible, op);
    const fault = this.#fault;
    if (!fault || !('flb' in fault) || fault.flb !== flb.compatible) return;
    return this.#maybeFire(fault, op, `FLB ${flb.compatible}: ${op}`);
  }

  #maybeFire(fault: InjectedFault, op: string, who: string): void | Promise<void> {
    if (this.#fired || fault.op !== op) return;
    if (++this.#matched < fault.nth) return;
    this.#fired = true;
    const what = `${who} (call ${fault.nth})`;
    this.#log.info(`testkit: injecting ${fault.errno ?? fault.kind} into ${what}`);
    switch (fault.kind) {
      case 'errno':
        throw new KernelError(fault.errno!, `testkit: injected into ${what}`);
      case 'throw':
        throw new Error(`testkit: injected throw from ${what}`);
      case 'hang':
        return new Promise<void>(() => undefined);
    }
  }
}

function count<Op extends string>(
  calls: Map<string, Map<Op, number>>,
  compatible: string,
  op: Op,
): void {
  const ops = calls.get(compatible) ?? new Map<Op, number>();
  calls.set(compatible, ops);
  ops.set(op, (ops.get(op) ?? 0) + 1);
}

function countsOf<Op extends string>(
  calls: Map<string, Map<Op, number>>,
): Record<string, Partial<Record<Op, number>>> {
  const counts: Record<string, Partial<Record<Op, number>>> = {};
  for (const [compatible, ops] of calls)
    counts[compatible] = Object.fromEntries(ops) as Partial<Record<Op, number>>;
  return counts;
}
