import { afterEach } from 'vitest';
import { LiveUpdateDevice, type LiveUpdateSession } from '@liveupdate/core';
import {
  F_GETFL,
  KernelError,
  O_NONBLOCK,
  type PhysicalMemory,
  type Process,
} from '@liveupdate/machine';
import {
  bootForLiveUpdate,
  rawLuoHandover,
  type BootForLiveUpdateOptions,
  type LiveUpdateHarness,
} from '@liveupdate/testkit';
import { eventfdLuoSer } from '@liveupdate/plugin-eventfd';

/** The module under test, by its package name, as a kernel image lists it. */
export const EVENTFD_MODULE = '@liveupdate/plugin-eventfd';

const harnesses: LiveUpdateHarness[] = [];
afterEach(async () => {
  await Promise.all(harnesses.splice(0).map((h) => h.shutdown()));
});

/** A LUO machine with the eventfd-luo module, shut down after the test. */
export async function boot(
  options: Partial<BootForLiveUpdateOptions> = {},
): Promise<LiveUpdateHarness> {
  const harness = await bootForLiveUpdate({
    modules: [EVENTFD_MODULE],
    moduleBase: import.meta.url,
    ...options,
  });
  harnesses.push(harness);
  return harness;
}

/** `write(2)` of `value` to the eventfd at `fd`, a little-endian u64. */
export async function add(process: Process, fd: number, value: bigint): Promise<void> {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, value, true);
  await process.write(fd, bytes);
}

/** `read(2)` of the eventfd at `fd`: what it takes from the counter. */
export async function take(process: Process, fd: number): Promise<bigint> {
  const bytes = await process.read(fd, 8);
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
}

/**
 * What identifies a non-blocking eventfd's state, through its fd alone: its open flags, and what
 * reads take from it until it is empty (one read of the whole counter, or one read of 1 per unit
 * in semaphore mode). The counter is then written back, so the eventfd ends as it was. A blocking
 * eventfd cannot be drained without waiting: it is refused here.
 */
export async function readEventfdContent(process: Process, fd: number): Promise<unknown> {
  const flags = await process.fcntl(fd, F_GETFL);
  if ((flags & O_NONBLOCK) === 0) throw new Error(`fd ${fd} is blocking: it cannot be drained`);
  const reads: bigint[] = [];
  for (;;) {
    try {
      reads.push(await take(process, fd));
    } catch (error) {
      if (KernelError.isInstance(error) && error.code === 'EAGAIN') break;
      throw error;
    }
  }
  const count = reads.reduce((sum, n) => sum + n, 0n);
  if (count > 0n) await add(process, fd, count);
  return { flags, reads };
}

/** Create session `name` and preserve `fd` in it under token 1. */
export async function preserveIn(
  device: LiveUpdateDevice,
  name: string,
  fd: number,
): Promise<LiveUpdateSession> {
  const session = await device.createSession(name);
  await session.preserveFd(fd, 1n);
  return session;
}

/** Retrieve session `name`, take token 1 out of it and finish the session; returns the new fd. */
export async function retrieveEventfd(device: LiveUpdateDevice, name: string): Promise<number> {
  const session = await device.retrieveSession(name);
  const fd = await session.retrieveFd(1n);
  await session.finish();
  return fd;
}

/**
 * The physical address of the `eventfd_luo_ser` of token `token` in the handover, from the
 * `luo_file_ser` entries (for tests that damage a handover on purpose, from `onHandover`).
 */
export function findEventfdLuoSer(memory: PhysicalMemory, khoFdtPhys: number, token = 1n): number {
  for (const session of rawLuoHandover(memory, khoFdtPhys).sessions) {
    for (const file of session.files) {
      if (file.entry.token === token) return Number(file.entry.data);
    }
  }
  throw new Error(`no luo_file_ser with token ${token} in the handover`);
}

/** Rewrite fields of the `eventfd_luo_ser` at `phys`. */
export function patchEventfdLuoSer(
  memory: PhysicalMemory,
  phys: number,
  patch: Partial<ReturnType<typeof eventfdLuoSer.decode>>,
): void {
  const view = memory.view(phys, eventfdLuoSer.size);
  eventfdLuoSer.encodeInto(view, 0, { ...eventfdLuoSer.decode(view), ...patch });
}

export { errnoOf } from '@liveupdate/testkit';
