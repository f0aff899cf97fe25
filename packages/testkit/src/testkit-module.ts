/**
 * The `testkit` kernel module: what the testkit observes of a kernel, through syscalls that only
 * this module registers. `liveUpdateImage` lists it right after `@liveupdate/core/module` in every
 * image, so it sees LUO and is there before any handler module.
 *
 * - `testkit_stats()`: {@link TestkitStats}.
 * - `testkit_fault('set', spec)`, `testkit_fault('clear')`, `testkit_fault('status')`: handler
 *   and FLB fault injection (`injectFault`), when the kernel booted with `liveupdate.fault_injection=on`.
 * - `testkit_same_file(fd1, fd2)`: whether two fds refer to one open file (`kcmp(KCMP_FILE)`).
 * - `testkit_handler(compatible)`: the ops the registered handler implements.
 * - `testkit_can_preserve(compatible, fd, times)`: call the handler's `canPreserve` on the file
 *   `times` times; its distinct answers.
 *
 * @module @liveupdate/testkit/module
 */
import {
  LIVEUPDATE_SERVICE,
  type FileHandler,
  type LiveUpdateOrchestrator,
} from '@liveupdate/core';
import { KernelError, argFd, argUint, defineModule, type ModuleContext } from '@liveupdate/kernel';
import { FAULT_OPS, checkFaultSpec } from './fault-injection.js';
import { TestkitFaultInjector } from './testkit-fault-injector.js';
import type { CanPreserveProbe, HandlerDescription } from './testkit-probes.js';
import type { TestkitStats } from './testkit-stats.js';

export default defineModule({
  name: 'testkit',
  init(ctx) {
    const luo = ctx.services.get(LIVEUPDATE_SERVICE);
    const injector = luo?.faultInjection ? new TestkitFaultInjector(ctx.log) : undefined;
    if (injector) luo!.setFaultInjector(injector);

    ctx.syscalls.register('testkit_stats', (): TestkitStats => stats(ctx));
    ctx.syscalls.register('testkit_fault', (_sys, command, spec) => {
      if (!injector) {
        throw new KernelError(
          'EOPNOTSUPP',
          'testkit: fault injection is off (boot with liveupdate.fault_injection=on)',
        );
      }
      switch (command) {
        case 'set': {
          const fault = checkFaultSpec(spec);
          if ('flb' in fault) flbOf(luo, fault.flb);
          else handlerOf(luo, fault.compatible);
          injector.set(fault);
          return 0;
        }
        case 'clear':
          injector.set(null);
          return 0;
        case 'status':
          return injector.status;
        default:
          throw new KernelError('EINVAL', `testkit_fault: unknown command ${String(command)}`);
      }
    });
    ctx.syscalls.register(
      'testkit_same_file',
      (sys, a, b) => sys.process.files.get(argFd(a)) === sys.process.files.get(argFd(b)),
    );
    ctx.syscalls.register('testkit_handler', (_sys, compatible): HandlerDescription => {
      const handler = handlerOf(luo, compatible);
      return {
        compatible: handler.compatible,
        ops: FAULT_OPS.filter((op) => typeof handler[op] === 'function'),
      };
    });
    ctx.syscalls.register(
      'testkit_can_preserve',
      (sys, compatible, fd, times): CanPreserveProbe => {
        const handler = handlerOf(luo, compatible);
        const file = sys.process.files.get(argFd(fd));
        const count = Math.max(1, argUint(times, 'times'));
        const answers = new Set<boolean | string>();
        for (let i = 0; i < count; i++) {
          // Not awaited: a cheap check answers at once, like the kernel's bool can_preserve().
          const answer: unknown = handler.canPreserve(handler, file);
          answers.add(typeof answer === 'boolean' ? answer : typeof answer);
        }
        return { answers: [...answers] };
      },
    );
  },
});

function stats(ctx: ModuleContext): TestkitStats {
  const pages = ctx.pages.stats;
  const kho = ctx.kho.stats;
  return {
    framesAllocated: pages.allocated,
    framesFree: pages.free,
    framesReserved: pages.reserved,
    khoPreservedFolios: kho.preservedFolios,
    khoPreservedFrames: kho.preservedFrames,
    khoUnrestoredFolios: kho.unrestoredFolios,
    khoUnrestoredFrames: kho.unrestoredFrames,
    khoUnclaimedFolios: kho.unclaimedFolios,
    khoUnclaimedFrames: kho.unclaimedFrames,
    pinnedFrames: ctx.pages.pinnedFrames,
    openFiles: ctx.vfs.openFiles,
  };
}

/** The registered handler `compatible`: `EOPNOTSUPP` without LUO, `ENOENT` when there is none. */
function handlerOf(luo: LiveUpdateOrchestrator | undefined, compatible: unknown): FileHandler {
  if (!luo?.enabled) throw new KernelError('EOPNOTSUPP', 'testkit: LUO is not enabled');
  const handler = typeof compatible === 'string' ? luo.registry.byCompatible(compatible) : null;
  if (!handler) {
    const registered = luo.registry.handlers.map((h) => h.compatible).join(', ') || 'none';
    throw new KernelError(
      'ENOENT',
      `testkit: no file handler "${String(compatible)}" is registered (registered: ${registered})`,
    );
  }
  return handler;
}

/** Check that an FLB `compatible` is registered: `EOPNOTSUPP` without LUO, `ENOENT` otherwise. */
function flbOf(luo: LiveUpdateOrchestrator | undefined, compatible: string): void {
  if (!luo?.enabled) throw new KernelError('EOPNOTSUPP', 'testkit: LUO is not enabled');
  const registered = luo.flbs.compatibles;
  if (!registered.includes(compatible)) {
    throw new KernelError(
      'ENOENT',
      `testkit: no FLB "${compatible}" is registered (registered: ${registered.join(', ') || 'none'})`,
    );
  }
}
