import type { MessagePort } from 'node:worker_threads';
import type { KernelToMachine, KernelWorkerData, MachineToKernel } from '@liveupdate/machine';
import { Kernel } from './kernel.js';
import { KernelPanic } from './kernel-panic.js';
import { ModuleLoader } from './module-loader.js';
import { kernelOwnNote } from './kernel-formats.js';
import { encodeKernelNotes } from './kexec-notes.js';

/**
 * The worker side of the boot protocol: import the image's modules and report `loaded`, wait for
 * `boot` (carrying the KHO root FDT's address), boot, then serve syscalls.
 */
export async function runKernelWorker(port: MessagePort, data: KernelWorkerData): Promise<void> {
  const output = (message: KernelToMachine): void => port.postMessage(message);
  const modules = new ModuleLoader();
  try {
    await modules.load(data.image.modules, data.image.moduleBase);
  } catch (error) {
    output({ type: 'load-failed', reason: (error as Error).message });
    return;
  }
  let notes: Uint8Array;
  try {
    notes = encodeKernelNotes([kernelOwnNote(), ...modules.notes()]);
  } catch (error) {
    output({ type: 'load-failed', reason: (error as Error).message });
    return;
  }
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
        ).then(
          (booted) => {
            kernel = booted;
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
