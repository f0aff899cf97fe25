import { afterEach } from 'vitest';
import { createKernelImage } from '@liveupdate/kernel';
import {
  KernelError,
  Machine,
  type KernelImage,
  type MachineOptions,
  type Process,
} from '@liveupdate/machine';

export const PROBE = new URL('./fixtures/kho-probe.js', import.meta.url).href;
export const TEST_DEVICES = new URL('./fixtures/test-devices.js', import.meta.url).href;
export const FAILING_INIT = new URL('./fixtures/failing-init.js', import.meta.url).href;
export const SERVICE_USER = new URL('./fixtures/service-user.js', import.meta.url).href;
export const DMA_PROBE = new URL('./fixtures/dma-probe.js', import.meta.url).href;
export const CHANNEL_PROBE = new URL('./fixtures/channel-probe.js', import.meta.url).href;
export const NOT_A_MODULE = new URL('./fixtures/not-a-module.js', import.meta.url).href;

/** Small RAM keeps poisoning at boot cheap. */
export const TEST_RAM = 32 * 1024 * 1024;

/** A test kernel: KHO on, free frames poisoned, the probe and test devices loaded. */
export function testImage(
  version: string,
  options: { cmdline?: string; modules?: string[] } = {},
): KernelImage {
  return createKernelImage({
    version,
    cmdline: options.cmdline ?? 'kho=on page_poison=on',
    modules: options.modules ?? [PROBE, TEST_DEVICES],
  });
}

const machines: Machine[] = [];
afterEach(async () => {
  await Promise.all(machines.splice(0).map((m) => m.shutdown()));
});

/** A machine booted with `image`, shut down after the test. */
export async function bootedMachine(
  image: KernelImage = testImage('6.18.0'),
  options: MachineOptions = {},
): Promise<Machine> {
  const machine = Machine.create({ ramBytes: TEST_RAM, ...options });
  machines.push(machine);
  await machine.boot(image);
  return machine;
}

/** kexec_load `image` from `process`, reboot into it, and return a process of the new kernel. */
export async function kexec(
  machine: Machine,
  process: Process,
  image: KernelImage,
): Promise<Process> {
  await process.kexecLoad(image);
  await process.reboot(0x45584543);
  return machine.spawn();
}

/** Call the probe module's syscall. */
export function probe<T = unknown>(process: Process, op: string, args: object = {}): Promise<T> {
  return process.syscall('kho_probe', op, args) as Promise<T>;
}

/** The errno a syscall fails with, as `[name, number]`, or `'resolved'`. Anything but a KernelError fails. */
export async function errnoOf(promise: Promise<unknown>): Promise<[string, number] | 'resolved'> {
  try {
    await promise;
    return 'resolved';
  } catch (error) {
    if (!KernelError.isInstance(error)) throw error;
    return [error.code, error.errno];
  }
}

/** Whether `promise` is still pending after the kernel answered another syscall of `process`. */
export async function pending(process: Process, promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  // A round trip through the kernel, then a little time, so a wrongly settled call shows.
  const fd = await process.open('/dev/null');
  await process.close(fd);
  await new Promise((resolve) => setTimeout(resolve, 20));
  return !settled;
}
