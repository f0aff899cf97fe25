import { createRequire, syncBuiltinESMExports } from 'node:module';
import type { MessagePort } from 'node:worker_threads';
import type { KernelWorkerData } from '@liveupdate/machine';

const require = createRequire(import.meta.url);

/** What a kernel worker keeps for itself before it closes the channels: its port and data. */
export interface KernelWorkerChannel {
  readonly port: MessagePort;
  readonly data: KernelWorkerData;
}

const RULE =
  'kernel workers share nothing but RAM and the boot parameters; keep state across a live update in KHO-preserved memory';

/** Replaces a closed constructor: any use throws an Error that says why. */
function closedConstructor(name: string): new (...args: unknown[]) => never {
  return class {
    constructor() {
      throw new Error(`${name} is not available to kernel code: ${RULE}`);
    }
  } as unknown as new (...args: unknown[]) => never;
}

function closedFunction(name: string): (...args: unknown[]) => never {
  return () => {
    throw new Error(`${name} is not available to kernel code: ${RULE}`);
  };
}

/** Define `key` on `target` as `value`, for good: not writable, not configurable. */
function seal(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: false, configurable: false });
}

/**
 * Close every channel from this kernel worker to another thread except its own port to the
 * machine, before any module is imported (DESIGN rule 1). Takes the port and `workerData` for the
 * caller, then, in `node:worker_threads` (both its CommonJS exports and, through
 * `syncBuiltinESMExports`, its ESM named exports) and on `globalThis`:
 *
 * - `BroadcastChannel` throws: it reaches every thread of the process by name, the preloaded next
 *   kernel included;
 * - `Worker` throws: a worker of our own would be a thread outside these rules;
 * - `postMessageToThread` throws: it reaches any thread by id;
 * - `parentPort` and `workerData` read `null`: the port stays with the kernel, and the RAM buffer
 *   is reached only through the kernel's memory objects.
 *
 * What stays open, because it cannot be closed inside one process: the file system, sockets and
 * child processes; `MessageChannel` stays (its ports reach no other thread unless posted through
 * a channel, and none is left). See docs/kho-handover.md, "Isolation".
 */
export function isolateKernelWorker(): KernelWorkerChannel {
  const threads = require('node:worker_threads') as typeof import('node:worker_threads');
  const { parentPort, workerData } = threads;
  if (!parentPort) throw new Error('the kernel must run in a worker thread');
  const closedBroadcastChannel = closedConstructor('BroadcastChannel');
  seal(threads, 'BroadcastChannel', closedBroadcastChannel);
  seal(threads, 'Worker', closedConstructor('Worker'));
  seal(threads, 'postMessageToThread', closedFunction('postMessageToThread'));
  seal(threads, 'parentPort', null);
  seal(threads, 'workerData', null);
  seal(globalThis, 'BroadcastChannel', closedBroadcastChannel);
  syncBuiltinESMExports();
  return { port: parentPort, data: workerData as KernelWorkerData };
}
