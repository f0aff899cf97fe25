import { EFD_CLOEXEC, KernelError } from '@liveupdate/machine';
import { EFD_FLAGS, eventfdCreateFile } from '../vfs/event-fd.js';
import type { Vfs } from '../vfs/vfs.js';
import { argUint } from './syscall-args.js';
import type { SyscallTable } from './syscall-table.js';

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
    process.files.fill(fd, eventfdCreateFile(vfs, BigInt(count), how));
    return fd;
  });
}
