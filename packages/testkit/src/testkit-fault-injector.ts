import type { FaultInjector, FileHandler, HandlerOp } from '@liveupdate/core';
import { KernelError, type KernelLog } from '@liveupdate/kernel';
import type { FaultStatus, InjectedFault } from './fault-injection.js';

/**
 * The testkit module's fault injector, installed in LUO when the kernel booted with
 * `liveupdate.fault_injection=on`: counts every handler call, and fails the one the current
 * fault names. Lives in the kernel; userspace drives it through the `testkit_fault` syscall.
 */
export class TestkitFaultInjector implements FaultInjector {
  readonly #log: KernelLog;
  readonly #calls = new Map<string, Map<HandlerOp, number>>();
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
    const calls: Record<string, Partial<Record<HandlerOp, number>>> = {};
    for (const [compatible, ops] of this.#calls) calls[compatible] = Object.fromEntries(ops);
    return { fault: this.#fault, fired: this.#fired, calls };
  }

  beforeCall(handler: FileHandler, op: HandlerOp): void | Promise<void> {
    const ops = this.#calls.get(handler.compatible) ?? new Map<HandlerOp, number>();
    this.#calls.set(handler.compatible, ops);
    ops.set(op, (ops.get(op) ?? 0) + 1);
    const fault = this.#fault;
    if (!fault || this.#fired || fault.compatible !== handler.compatible || fault.op !== op) return;
    if (++this.#matched < fault.nth) return;
    this.#fired = true;
    const what = `${handler.compatible}: ${op} (call ${fault.nth})`;
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
