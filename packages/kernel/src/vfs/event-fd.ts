import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
  KernelError,
  O_NONBLOCK,
  O_RDWR,
} from '@liveupdate/machine';
import { WaitQueue } from '../wait-queue.js';
import type { File, FileOperations, SyscallContext } from './file.js';
import type { Vfs } from './vfs.js';

/** `ULLONG_MAX`: a counter value no write may reach, and the value a write may not carry. */
const ULLONG_MAX = 0xffff_ffff_ffff_ffffn;
/** Size of the counter as read and written: a u64. */
const EVENTFD_SIZE = 8;

/**
 * An eventfd's counter (`struct eventfd_ctx`, `fs/eventfd.c`): a 64-bit counter that userspace
 * reads and writes through the eventfd's file and that the kernel (a driver's interrupt handler)
 * increments with {@link signal}. Get it from a file with {@link eventfdFromFile}.
 *
 * Waiting readers and writers are promises in the kernel worker: a read that waits for the
 * counter to become non-zero leaves the kernel, and the process's other syscalls, running.
 */
export class EventFd {
  /** `EFD_SEMAPHORE`: each read takes 1 instead of the whole counter. */
  readonly semaphore: boolean;
  #count: bigint;
  readonly #wait = new WaitQueue();

  /** @internal Made by {@link eventfdCreateFile} (and so by the `eventfd2` syscall). */
  constructor(initval: bigint, semaphore: boolean) {
    this.#count = initval;
    this.semaphore = semaphore;
  }

  /** The counter's current value. */
  get count(): bigint {
    return this.#count;
  }

  /**
   * `eventfd_signal`: add `count` (a positive safe integer, default 1) to the counter and wake
   * waiting readers. Never fails nor waits; the counter saturates at `ULLONG_MAX` as the kernel's
   * does. `EINVAL` for a bad `count`.
   */
  signal(count = 1): void {
    if (!Number.isSafeInteger(count) || count <= 0) {
      throw new KernelError(
        'EINVAL',
        `eventfd signal count must be a positive integer, got ${count}`,
      );
    }
    const next = this.#count + BigInt(count);
    this.#count = next > ULLONG_MAX ? ULLONG_MAX : next;
    this.#wait.wake();
  }

  /**
   * `eventfd_read`: take the counter (all of it, or 1 with `EFD_SEMAPHORE`). A zero counter gives
   * `EAGAIN` when `nonblock`, and otherwise waits for a write or a signal; `EINTR` when `abort`
   * fires first (the calling process exits).
   */
  async read(nonblock: boolean, abort?: AbortSignal): Promise<bigint> {
    for (;;) {
      if (this.#count > 0n) {
        const taken = this.semaphore ? 1n : this.#count;
        this.#count -= taken;
        this.#wait.wake();
        return taken;
      }
      if (nonblock) throw new KernelError('EAGAIN', 'eventfd counter is zero');
      await this.#wait.wait(abort, 'an eventfd');
    }
  }

  /**
   * `eventfd_write`: add `value` to the counter. `ULLONG_MAX` gives `EINVAL`; a sum above
   * `ULLONG_MAX - 1` gives `EAGAIN` when `nonblock`, and otherwise waits for a read to make room
   * (`EINTR` when `abort` fires first).
   */
  async write(value: bigint, nonblock: boolean, abort?: AbortSignal): Promise<void> {
    if (value === ULLONG_MAX) throw new KernelError('EINVAL', 'eventfd cannot take 2^64 - 1');
    for (;;) {
      if (ULLONG_MAX - this.#count > value) {
        this.#count += value;
        if (value > 0n) this.#wait.wake();
        return;
      }
      if (nonblock) throw new KernelError('EAGAIN', 'eventfd counter would overflow');
      await this.#wait.wait(abort, 'an eventfd');
    }
  }
}

/** The file operations of an eventfd (`eventfd_fops`). */
export const eventfdOperations: FileOperations = {
  async read(file: File, count: number, _offset: number, ctx: SyscallContext) {
    const eventfd = file.privateData as EventFd;
    if (count < EVENTFD_SIZE) {
      throw new KernelError('EINVAL', `eventfd read of ${count} bytes, want at least 8`);
    }
    const value = await eventfd.read(nonblocking(file), ctx.process.exiting);
    const out = new Uint8Array(EVENTFD_SIZE);
    new DataView(out.buffer).setBigUint64(0, value, true);
    return out;
  },
  async write(file: File, data: Uint8Array, _offset: number, ctx: SyscallContext) {
    const eventfd = file.privateData as EventFd;
    if (data.length < EVENTFD_SIZE) {
      throw new KernelError('EINVAL', `eventfd write of ${data.length} bytes, want 8`);
    }
    const value = new DataView(data.buffer, data.byteOffset, EVENTFD_SIZE).getBigUint64(0, true);
    await eventfd.write(value, nonblocking(file), ctx.process.exiting);
    return EVENTFD_SIZE;
  },
};

function nonblocking(file: File): boolean {
  return (file.flags & O_NONBLOCK) !== 0;
}

/**
 * `eventfd_ctx_fileget`: the eventfd behind `file`, for a module that signals it (vfio delivering
 * a device's interrupts to userspace). `EINVAL` when `file` is not an eventfd. The module holds a
 * reference on the file (`vfs.fget`) for as long as it signals the eventfd, and drops it with
 * `vfs.fput`.
 *
 * @example
 * ```js
 * const file = vfs.fget(ctx.process.files.get(fd));
 * const eventfd = eventfdFromFile(file); // EINVAL: not an eventfd
 * dev.requestIrq((count) => eventfd.signal(count));
 * // later: dev.freeIrq(); await vfs.fput(file);
 * ```
 */
export function eventfdFromFile(file: File): EventFd {
  if (file.fops !== eventfdOperations || !(file.privateData instanceof EventFd)) {
    throw new KernelError('EINVAL', `${file.path} is not an eventfd`);
  }
  return file.privateData;
}

/** The flags of `eventfd2` and {@link eventfdCreateFile}. */
export const EFD_FLAGS = EFD_SEMAPHORE | EFD_CLOEXEC | EFD_NONBLOCK;

/**
 * `eventfd_create()` for kernel code (what `eventfd2` does, minus the fd): a new
 * `anon_inode:[eventfd]` file whose counter holds `count` (any u64 but `ULLONG_MAX`, which only
 * a signal reaches: the counter saturates there), in semaphore and non-blocking mode as `flags`
 * say, holding one reference for the caller. `EFD_CLOEXEC` is an fd flag and is ignored here.
 * `EINVAL` for another flag or a count outside the u64 range. A LUO handler rebuilds a retrieved
 * eventfd with it.
 */
export function eventfdCreateFile(vfs: Vfs, count: bigint, flags: number): File {
  if (!Number.isInteger(flags) || (flags & ~EFD_FLAGS) !== 0 || flags < 0) {
    throw new KernelError('EINVAL', `unknown eventfd flags 0x${flags.toString(16)}`);
  }
  if (typeof count !== 'bigint' || count < 0n || count > ULLONG_MAX) {
    throw new KernelError('EINVAL', `eventfd count ${String(count)} is not a u64`);
  }
  const eventfd = new EventFd(count, (flags & EFD_SEMAPHORE) !== 0);
  return vfs.anonInodeGetFile(
    'eventfd',
    eventfdOperations,
    eventfd,
    O_RDWR | (flags & EFD_NONBLOCK),
  );
}
