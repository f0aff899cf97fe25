import { afterEach } from 'vitest';
import { KernelError, type Process } from '@liveupdate/machine';
import {
  bootForLiveUpdate,
  type BootForLiveUpdateOptions,
  type LiveUpdateHarness,
} from '@liveupdate/testkit';

/** The memfd module, by package name, as the kernel image lists it. */
export const MEMFD_MODULE = '@liveupdate/plugin-memfd';

const harnesses: LiveUpdateHarness[] = [];
afterEach(async () => {
  await Promise.all(harnesses.splice(0).map((h) => h.shutdown()));
});

/** A LUO machine with memfd, shut down after the test; `options` adds to the harness's. */
export async function boot(
  options: Omit<BootForLiveUpdateOptions, 'modules' | 'moduleBase'> = {},
): Promise<LiveUpdateHarness> {
  const harness = await bootForLiveUpdate({
    ...options,
    modules: [MEMFD_MODULE],
    moduleBase: import.meta.url,
  });
  harnesses.push(harness);
  return harness;
}

/** A memfd of `process` holding `text`. */
export async function memfdWith(process: Process, text: string): Promise<number> {
  const fd = await process.memfdCreate('data');
  await process.pwrite(fd, new TextEncoder().encode(text), 0);
  return fd;
}

/** The first `length` bytes of `fd`, as text. */
export async function textOf(process: Process, fd: number, length: number): Promise<string> {
  return new TextDecoder().decode(await process.pread(fd, length, 0));
}

/** The errno name `promise` rejects with (fails when it resolves or rejects with anything else). */
export async function errnoOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (KernelError.isInstance(error)) return error.code;
    throw error;
  }
  throw new Error('expected a KernelError, the call succeeded');
}
