import { describe, expect, it } from 'vitest';
import { CommandLine, KernelLog, type ModuleContext } from '@liveupdate/kernel';
import { KernelError } from '@liveupdate/machine';
import type { FaultInjector, HandlerOp } from './fault-injector.js';
import { defineHandler, type FileHandler } from './file-handler.js';
import { callFlb, callHandler, callVoidFlb, callVoidHandler } from './handler-call.js';
import { defineFlb, type FlbOp, type LiveUpdateFlb } from './liveupdate-flb.js';
import { LiveUpdateOrchestrator } from './live-update-orchestrator.js';

const handler: FileHandler = defineHandler({
  compatible: 'probe-v1',
  canPreserve: () => true,
  preserve: () => undefined,
  unpreserve: () => undefined,
  retrieve: () => undefined,
  finish: () => undefined,
});

function logged(): { log: KernelLog; lines: string[] } {
  const lines: string[] = [];
  const log = new KernelLog((message) => {
    if (message.type === 'log') lines.push(message.text);
  }, KernelLog.now());
  return { log, lines };
}

/** An injector that records what it was asked and answers with `answer`. */
function injector(answer: () => void | Promise<void>): FaultInjector & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    beforeCall(h: FileHandler, op: HandlerOp) {
      asked.push(`${h.compatible} ${op}`);
      return answer();
    },
  };
}

const settledWithin = (promise: Promise<unknown>, ms: number): Promise<boolean> =>
  Promise.race([
    promise.then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), ms)),
  ]);

describe('callHandler with a fault injector', () => {
  it('asks the injector first and makes the call when it returns', async () => {
    const { log } = logged();
    const faults = injector(() => undefined);
    const result = await callHandler({ log, faultInjector: faults }, handler, 'preserve', () => 7);
    expect(result).toBe(7);
    expect(faults.asked).toEqual(['probe-v1 preserve']);
  });

  it("fails the call with the injector's KernelError, errno kept, without calling the op", async () => {
    const { log, lines } = logged();
    const faults = injector(() => {
      throw new KernelError('ENOSPC', 'injected');
    });
    let called = false;
    const outcome = callHandler({ log, faultInjector: faults }, handler, 'preserve', () => {
      called = true;
    });
    await expect(outcome).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(called).toBe(false);
    expect(lines).toEqual([]);
  });

  it('turns a plain throw of the injector into EIO with a log line, as a throw of the op', async () => {
    const { log, lines } = logged();
    const faults = injector(() => Promise.reject(new Error('boom')));
    await expect(
      callHandler({ log, faultInjector: faults }, handler, 'retrieve', () => undefined),
    ).rejects.toMatchObject({ code: 'EIO' });
    expect(lines[0]).toMatch(/^LUO: probe-v1: retrieve threw Error: boom/);
  });

  it('logs an injected throw from a void op and carries on', async () => {
    const { log, lines } = logged();
    const faults = injector(() => {
      throw new KernelError('EIO', 'injected');
    });
    await expect(
      callVoidHandler({ log, faultInjector: faults }, handler, 'finish', () => undefined),
    ).resolves.toBeUndefined();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^LUO: probe-v1: finish threw .*injected[\s\S]*; continuing$/);
  });

  it('hangs the call while the injector does not settle', async () => {
    const { log } = logged();
    let called = false;
    const faults = injector(() => new Promise<void>(() => undefined));
    const call = callHandler({ log, faultInjector: faults }, handler, 'retrieve', () => {
      called = true;
    });
    expect(await settledWithin(call, 50)).toBe(false);
    expect(called).toBe(false);
  });

  it('calls the op directly when no injector is installed', async () => {
    const { log } = logged();
    await expect(
      callHandler({ log, faultInjector: undefined }, handler, 'canPreserve', () => true),
    ).resolves.toBe(true);
  });
});

describe('callFlb with a fault injector', () => {
  const flb = defineFlb({
    compatible: 'probe-flb-v1',
    preserve: () => undefined,
    unpreserve: () => undefined,
    retrieve: () => undefined,
    finish: () => undefined,
  });

  /** An injector with FLB faults: records what it was asked and answers with `answer`. */
  function flbInjector(answer: () => void | Promise<void>): FaultInjector & { asked: string[] } {
    const asked: string[] = [];
    return {
      asked,
      beforeCall: () => undefined,
      beforeFlbCall(f: LiveUpdateFlb, op: FlbOp) {
        asked.push(`${f.compatible} ${op}`);
        return answer();
      },
    };
  }

  it("fails the FLB op with the injector's KernelError, errno kept, without calling it", async () => {
    const { log } = logged();
    const faults = flbInjector(() => {
      throw new KernelError('ENOMEM', 'injected');
    });
    let called = false;
    const outcome = callFlb({ log, faultInjector: faults }, flb, 'preserve', () => {
      called = true;
    });
    await expect(outcome).rejects.toMatchObject({ code: 'ENOMEM' });
    expect(called).toBe(false);
    expect(faults.asked).toEqual(['probe-flb-v1 preserve']);
  });

  it('logs an injected failure of a void FLB op and carries on without calling it', async () => {
    const { log, lines } = logged();
    const faults = flbInjector(() => Promise.reject(new Error('boom')));
    let called = false;
    await expect(
      callVoidFlb({ log, faultInjector: faults }, flb, 'finish', () => {
        called = true;
      }),
    ).resolves.toBeUndefined();
    expect(called).toBe(false);
    expect(lines[0]).toMatch(
      /^LUO: FLB probe-flb-v1: finish threw Error: boom[\s\S]*; continuing$/,
    );
  });

  it('calls the FLB op when the injector has no beforeFlbCall', async () => {
    const { log } = logged();
    const faults = injector(() => {
      throw new KernelError('EIO', 'handler ops only');
    });
    await expect(callFlb({ log, faultInjector: faults }, flb, 'retrieve', () => 5)).resolves.toBe(
      5,
    );
    expect(faults.asked).toEqual([]);
  });
});

describe('LiveUpdateOrchestrator.setFaultInjector', () => {
  // The orchestrator only reads these at construction; with KHO off it reads no incoming state.
  const orchestrator = (cmdline: string): LiveUpdateOrchestrator =>
    new LiveUpdateOrchestrator({
      log: logged().log,
      cmdline: new CommandLine(cmdline),
      kho: { enabled: false },
      services: { get: () => undefined },
    } as unknown as ModuleContext);

  it('is EOPNOTSUPP unless the kernel booted with liveupdate.fault_injection=on', () => {
    const off = orchestrator('liveupdate=on');
    expect(off.faultInjection).toBe(false);
    expect(() => off.setFaultInjector(injector(() => undefined))).toThrow(
      expect.objectContaining({ code: 'EOPNOTSUPP' }),
    );
    const on = orchestrator('liveupdate=on liveupdate.fault_injection=on');
    expect(on.faultInjection).toBe(true);
    expect(() => on.setFaultInjector(injector(() => undefined))).not.toThrow();
    expect(() => on.setFaultInjector(undefined)).not.toThrow();
  });
});
