import {
  KernelProcess,
  eventfdFromFile,
  type File,
  type SyscallTable,
  type Vfs,
} from '@liveupdate/kernel';
import { EFD_NONBLOCK, EFD_SEMAPHORE } from '@liveupdate/machine';

/** `ULLONG_MAX`: the highest counter, which only a kernel signal reaches (it saturates there). */
const ULLONG_MAX = 0xffff_ffff_ffff_ffffn;

/**
 * A new eventfd file whose counter holds `count`, in semaphore and non-blocking mode as `flags`
 * (`EFD_SEMAPHORE`, `EFD_NONBLOCK`) say, with one reference for the caller.
 *
 * The kernel exports no `eventfd_create()`, so this does what upstream's handler does with the
 * one it adds: it runs the kernel's own `eventfd2`, here in a kernel context of its own (a process
 * with no user side, as a kthread is), and takes the file out of that fd table. The file is thus
 * a real eventfd — `eventfdFromFile` takes it, a driver can signal it — and not a look-alike.
 * `eventfd2` takes a 32-bit `initval`, so the counter is set with a write, and its last step to
 * `2^64 - 1`, which no write may reach, with a signal.
 */
export async function createEventfdFile(
  syscalls: SyscallTable,
  vfs: Vfs,
  count: bigint,
  flags: number,
): Promise<File> {
  const kthread = new KernelProcess(0);
  const fd = (await syscalls.dispatch({ process: kthread }, 'eventfd2', [
    0,
    flags & (EFD_SEMAPHORE | EFD_NONBLOCK),
  ])) as number;
  const file = kthread.files.remove(fd);
  try {
    const eventfd = eventfdFromFile(file);
    if (count === ULLONG_MAX) {
      await eventfd.write(ULLONG_MAX - 1n, true);
      eventfd.signal(1);
    } else {
      await eventfd.write(count, true);
    }
    return file;
  } catch (error) {
    await vfs.fput(file);
    throw error;
  }
}
