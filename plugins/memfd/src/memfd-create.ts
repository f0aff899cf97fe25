import { KernelError, argUint, type ModuleContext } from '@liveupdate/kernel';
import { MFD_ALLOW_SEALING, MFD_CLOEXEC, MFD_HUGETLB } from '@liveupdate/machine';
import type { MemfdFileSystem } from './memfd-file-system.js';

/** Longest name `memfd_create` takes: `NAME_MAX` minus the `"memfd:"` prefix (`MFD_NAME_MAX_LEN`). */
export const MFD_NAME_MAX_LEN = 255 - 'memfd:'.length;

const MFD_ALL_FLAGS = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB;
const utf8 = new TextEncoder();

/**
 * Register `memfd_create(name, flags)`: `EFAULT` when `name` is not a string, `EINVAL` for a name
 * longer than {@link MFD_NAME_MAX_LEN} bytes of UTF-8 or an unknown flag; returns the new fd
 * (`FD_CLOEXEC` with `MFD_CLOEXEC`).
 */
export function registerMemfdCreate(ctx: ModuleContext, memfds: MemfdFileSystem): void {
  ctx.syscalls.register('memfd_create', async (sys, name, flags) => {
    if (typeof name !== 'string') throw new KernelError('EFAULT', 'memfd_create: bad name pointer');
    // The kernel copies a C string: it ends at the first NUL.
    const cut = name.includes('\0') ? name.slice(0, name.indexOf('\0')) : name;
    if (utf8.encode(cut).length > MFD_NAME_MAX_LEN) {
      throw new KernelError('EINVAL', `memfd_create: name longer than ${MFD_NAME_MAX_LEN} bytes`);
    }
    const mfd = argUint(flags ?? 0, 'flags');
    if (mfd & ~MFD_ALL_FLAGS || mfd > 0xffff_ffff) {
      throw new KernelError('EINVAL', `memfd_create: unknown flags 0x${mfd.toString(16)}`);
    }
    const file = memfds.create(cut, mfd);
    try {
      return ctx.vfs.installFd(sys.process, file, { cloexec: (mfd & MFD_CLOEXEC) !== 0 });
    } catch (error) {
      await ctx.vfs.fput(file);
      throw error;
    }
  });
}
