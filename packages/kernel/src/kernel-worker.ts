import type { MessagePort } from 'node:worker_threads';
import type { KernelToMachine, KernelWorkerData, MachineToKernel } from '@liveupdate/machine';
import { Kernel } from './kernel.js';
import { KernelPanic } from './kernel-panic.js';
import { ModuleLoader } from './module-loader.js';
import { kernelOwnNote } from './kernel-formats.js';
import { encodeKernelNotes } from './kexec-notes.js';
import { kexecTarget } from './kexec-target.js';
import { compileLazilyAgain } from './eager-compile.js';
import type { KernelLog } from './kernel-log.js';
import { devicesLike, rehearseLiveUpdate, type RehearsalResult } from './rehearsal.js';

/**
 * The worker side of the boot protocol: import the image's modules and report `loaded`, wait for
 * `boot` (carrying the KHO root FDT's address), boot, then serve syscalls.
 */
export async function runKernelWorker(port: MessagePort, data: KernelWorkerData): Promise<void> {
  const output = batchedOutput(port);
  const modules = new ModuleLoader();
  try {
    await modules.load(data.image.modules, data.image.moduleBase);
  } catch (error) {
    output({ type: 'load-failed', reason: (error as Error).message });
    return;
  } finally {
    compileLazilyAgain();
  }
  let notes: Uint8Array;
  try {
    notes = encodeKernelNotes([kernelOwnNote(), ...modules.notes()]);
  } catch (error) {
    output({ type: 'load-failed', reason: (error as Error).message });
    return;
  }
  // Read now, before `boot`: decoding the notes is not work for the blackout.
  const self = kexecTarget(data.image.version, data.image.cmdline, notes);
  // And run the live update's code paths once, on private memory (see rehearsal.ts).
  const rehearsal = data.image.rehearse
    ? await rehearseLiveUpdate(data.image, modules, self, notes, {
        devices: devicesLike(data.mmio),
      })
    : undefined;
  let kernel: Kernel | undefined;
  port.on('message', (message: MachineToKernel) => {
    switch (message.type) {
      case 'boot':
        Kernel.boot(
          data.ram,
          data.mmio,
          {
            version: data.image.version,
            cmdline: data.image.cmdline,
            khoFdtPhys: message.khoFdtPhys,
          },
          modules,
          output,
          self,
        ).then(
          (booted) => {
            kernel = booted;
            if (rehearsal) logRehearsal(booted.log, rehearsal);
            output({ type: 'running' });
          },
          (error: unknown) => {
            if (!KernelPanic.isInstance(error)) {
              output({
                type: 'panic',
                reason: `Oops during boot: ${(error as Error).stack ?? String(error)}`,
              });
            }
          },
        );
        return;
      case 'spawn':
        kernel?.spawn(message.pid);
        return;
      case 'syscall':
        void kernel?.syscall(message.id, message.pid, message.name, message.args);
        return;
      case 'kexec-load-result':
        kernel?.kexecLoadResult(message.id, message.error, message.notes);
        return;
    }
  });
  output({ type: 'loaded', notes });
}

/** What the image's rehearsal did, in the log of the kernel it prepared. */
function logRehearsal(log: KernelLog, { ms, modules, error }: RehearsalResult): void {
  const who = modules.length > 0 ? ` (${modules.join(', ')})` : '';
  if (error === undefined) {
    log.info(
      `rehearsal: a live update rehearsed on private memory at load in ${ms.toFixed(1)} ms${who}`,
    );
  } else {
    log.warn(`rehearsal: failed at ${error}; this kernel runs without it${who}`);
  }
}

/**
 * The kernel's output to the machine. Log lines and trace events, which the machine only
 * records, wait and go together: ahead of the next message the machine acts on, or at the end of
 * this turn of the worker's event loop (`setImmediate`), so a boot's or a syscall's dozens of lines
 * cost one `postMessage`, not one each. After `kexec` the kernel halts: this CPU jumped into the
 * next kernel, and the worker blocks, running nothing more, until the machine tears it down.
 */
function batchedOutput(port: MessagePort): (message: KernelToMachine) => void {
  let queue: KernelToMachine[] = [];
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (queue.length === 0) return;
    port.postMessage(queue.length === 1 ? queue[0] : queue);
    queue = [];
  };
  return (message) => {
    queue.push(message);
    if (message.type === 'log' || message.type === 'trace') {
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
      return;
    }
    flush();
    if (message.type === 'kexec') halt();
  };
}

/** Stop running JavaScript on this thread for good (`Atomics.wait` on a word nobody changes). */
function halt(): never {
  const word = new Int32Array(new SharedArrayBuffer(4));
  for (;;) Atomics.wait(word, 0, 0);
}
