import { EFD_CLOEXEC, EFD_NONBLOCK, EFD_SEMAPHORE, KernelError, O_RDWR } from '@liveupdate/machine';
import { EventFd, eventfdOperations } from '../vfs/event-fd.js';
import type { Vfs } from '../vfs/vfs.js';
import { argUint } from './syscall-args.js';
import type { SyscallTable } from './syscall-table.js';

const EFD_FLAGS = EFD_SEMAPHORE | EFD_CLOEXEC | EFD_NONBLOCK;

/** Register `eventfd2(initval, flags)`. */
export function registerEventfdSyscalls(table: SyscallTable, vfs: Vfs): void {
  table.register('eventfd2', (ctx, initval, flags) => {
    // `initval` is an `unsigned int` in the kernel's prototype.
    const count = argUint(initval, 'initval');
    if (count > 0xffff_ffff) throw new KernelError('EINVAL', `initval ${count} is not a u32`);
    const how = argUint(flags, 'flags');
    if ((how & ~EFD_FLAGS) !== 0) {
      throw new KernelError('EINVAL', `unknown eventfd flags 0x${how.toString(16)}`);
    }
    const process = ctx.process;
    const fd = process.files.reserve((how & EFD_CLOEXEC) !== 0);
    const eventfd = new EventFd(BigInt(count), (how & EFD_SEMAPHORE) !== 0);
    const file = vfs.anonInodeGetFile(
      'eventfd',
      eventfdOperations,
      eventfd,
      O_RDWR | (how & EFD_NONBLOCK),
    );
    process.files.fill(fd, file);
    return fd;
  });
}
