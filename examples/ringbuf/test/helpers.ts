import { afterEach } from 'vitest';
import { LiveUpdateDevice, type LiveUpdateSession } from '@liveupdate/core';
import { KernelError, PAGE_SIZE, type PhysicalMemory, type Process } from '@liveupdate/machine';
import {
  bootForLiveUpdate,
  type BootForLiveUpdateOptions,
  type LiveUpdateHarness,
} from '@liveupdate/testkit';
import { ringbufLuoSer, ringbufStats } from '@liveupdate/example-ringbuf';

/** The module under test, by its package name, as a kernel image lists it. */
export const RINGBUF_MODULE = '@liveupdate/example-ringbuf';
export const KiB = 1024;
export const MiB = 1024 * KiB;
export const POISON = 0xaa;

const harnesses: LiveUpdateHarness[] = [];
afterEach(async () => {
  await Promise.all(harnesses.splice(0).map((h) => h.shutdown()));
});

/** A LUO machine with the ringbuf module, shut down after the test. */
export async function boot(
  options: Partial<BootForLiveUpdateOptions> = {},
): Promise<LiveUpdateHarness> {
  const harness = await bootForLiveUpdate({
    modules: [RINGBUF_MODULE],
    moduleBase: import.meta.url,
    ...options,
  });
  harnesses.push(harness);
  return harness;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Append each of `records` to the buffer at `fd`, one `write` each. */
export async function append(process: Process, fd: number, records: string[]): Promise<void> {
  for (const record of records) await process.write(fd, utf8.encode(record));
}

/** Read every unread record, oldest first, until the buffer says `EAGAIN`. */
export async function drain(process: Process, fd: number): Promise<string[]> {
  const out: string[] = [];
  for (;;) {
    try {
      out.push(utf8Decoder.decode(await process.read(fd, 64 * KiB)));
    } catch (error) {
      if (KernelError.isInstance(error) && error.code === 'EAGAIN') return out;
      throw error;
    }
  }
}

/** Read `count` records. */
export async function consume(process: Process, fd: number, count: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push(utf8Decoder.decode(await process.read(fd, 64 * KiB)));
  return out;
}

/** `record-<n>`, padded to `length` characters with the record's own digit. */
export function record(n: number, length = 0): string {
  const text = `record-${n}:`;
  return text.padEnd(Math.max(length, text.length), String(n % 10));
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
export async function retrieveRing(device: LiveUpdateDevice, name: string): Promise<number> {
  const session = await device.retrieveSession(name);
  const fd = await session.retrieveFd(1n);
  await session.finish();
  return fd;
}

/** The physical address of the buffer's first byte, through a mapping of its first page. */
export async function dataPhys(process: Process, fd: number): Promise<number> {
  const mapping = await process.mmap(fd, PAGE_SIZE);
  await process.munmap(mapping);
  return mapping.segments[0]!.phys;
}

/** Rewrite fields of the `ringbuf_luo_ser` at `phys`. */
export function patchRingbufLuoSer(
  memory: PhysicalMemory,
  phys: number,
  patch: Partial<ReturnType<typeof ringbufLuoSer.decode>>,
): void {
  const view = memory.view(phys, ringbufLuoSer.size);
  ringbufLuoSer.encodeInto(view, 0, { ...ringbufLuoSer.decode(view), ...patch });
}

/**
 * What identifies a buffer's state, read without consuming anything: its counters (not
 * `liveUpdates`, which a live update counts up) and its unread bytes, through a mapping.
 */
export async function readRingContent(process: Process, fd: number): Promise<unknown> {
  const { liveUpdates: _liveUpdates, ...counters } = await ringbufStats(process, fd);
  const mapping = await process.mmap(fd, counters.capacity);
  try {
    const ring = new Uint8Array(counters.capacity);
    for (const segment of mapping.segments) ring.set(segment.bytes, segment.offset);
    const unread = new Uint8Array(counters.used);
    for (let i = 0; i < counters.used; i++)
      unread[i] = ring[(counters.tail + i) % counters.capacity]!;
    return { ...counters, unread };
  } finally {
    await process.munmap(mapping);
  }
}

export { errnoOf } from '@liveupdate/testkit';
