import { afterEach } from 'vitest';
import { F_GETFL, O_ACCMODE, O_RDWR, O_WRONLY, SEEK_END, type Process } from '@liveupdate/machine';
import {
  bootForLiveUpdate,
  type BootForLiveUpdateOptions,
  type LiveUpdateHarness,
} from '@liveupdate/testkit';
import { VALUE_DEVICE_PATH, VALUE_MAX } from '../src/index.js';

/**
 * The module under test, by its package name, as a kernel image lists it: the kernel worker
 * imports the built `dist/` through the package's own `exports`, so build before you test.
 */
export const MODULE = '__PACKAGE_NAME__';

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

const harnesses: LiveUpdateHarness[] = [];
afterEach(async () => {
  await Promise.all(harnesses.splice(0).map((harness) => harness.shutdown()));
});

/** A machine with LUO on and this module loaded, shut down after the test. */
export async function boot(
  options: Partial<BootForLiveUpdateOptions> = {},
): Promise<LiveUpdateHarness> {
  const harness = await bootForLiveUpdate({
    modules: [MODULE],
    moduleBase: import.meta.url,
    ...options,
  });
  harnesses.push(harness);
  return harness;
}

/** Open `/dev/__NAME__` and, when given, write `value` into the new file. */
export async function openValue(process: Process, value?: string, flags = O_RDWR): Promise<number> {
  const fd = await process.open(VALUE_DEVICE_PATH, flags);
  if (value !== undefined) await process.write(fd, utf8.encode(value));
  return fd;
}

/** Append `text` to the value, whatever the file position. */
export async function appendValue(process: Process, fd: number, text: string): Promise<void> {
  await process.pwrite(fd, utf8.encode(text), await process.lseek(fd, 0, SEEK_END));
}

/**
 * What identifies a file's state, read without changing it: its access mode and its value
 * (`pread` leaves the file position alone; a write-only file cannot be read, so only its mode).
 */
export async function readValueContent(
  process: Process,
  fd: number,
): Promise<{ accessMode: number; value: string | null }> {
  const accessMode = (await process.fcntl(fd, F_GETFL)) & O_ACCMODE;
  if (accessMode === O_WRONLY) return { accessMode, value: null };
  return { accessMode, value: utf8Decoder.decode(await process.pread(fd, VALUE_MAX, 0)) };
}
