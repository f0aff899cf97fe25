import {
  F_DUPFD,
  F_DUPFD_CLOEXEC,
  F_GETFD,
  F_GETFL,
  F_SETFD,
  FD_CLOEXEC,
  KernelError,
  O_CLOEXEC,
  PAGE_SIZE,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
  type PhysicalMemory,
} from '@liveupdate/machine';
import type { KernelProcess } from '../process-table.js';
import type { File, SyscallContext } from '../vfs/file.js';
import { NR_OPEN_DEFAULT } from '../vfs/fd-table.js';
import type { Vfs } from '../vfs/vfs.js';
import { argBytes, argFd, argInt, argPath, argUint } from './syscall-args.js';
import type { SyscallTable } from './syscall-table.js';

/** Largest single read or write, as Linux's `MAX_RW_COUNT`. */
export const MAX_RW_COUNT = 0x7ffff000;

/** Register the file syscalls: open, close, read, write, pread, pwrite, lseek, ioctl, dup, fcntl, ftruncate, fallocate, mmap, munmap. */
export function registerFileSyscalls(table: SyscallTable, vfs: Vfs, memory: PhysicalMemory): void {
  const fileOf = (process: KernelProcess, fd: unknown): File => process.files.get(argFd(fd));

  table.register('open', async (ctx, path, flags) => {
    const openFlags = argUint(flags ?? 0, 'flags');
    const file = await vfs.open(argPath(path), openFlags, ctx);
    try {
      return vfs.installFd(ctx.process, file, { cloexec: (openFlags & O_CLOEXEC) !== 0 });
    } catch (error) {
      await vfs.fput(file);
      throw error;
    }
  });

  table.register('close', async (ctx, fd) => {
    await vfs.fput(ctx.process.files.remove(argFd(fd)));
    return 0;
  });

  const read = async (
    ctx: SyscallContext,
    file: File,
    count: unknown,
    offset: number,
  ): Promise<Uint8Array> => {
    const n = Math.min(argUint(count, 'count'), MAX_RW_COUNT);
    if (!file.readable) throw new KernelError('EBADF', `${file.path} is not open for reading`);
    if (!file.fops.read) throw new KernelError('EINVAL', `${file.path} cannot be read`);
    const data = await file.fops.read(file, n, offset, ctx);
    if (!(data instanceof Uint8Array) || data.length > n) {
      throw new KernelError('EIO', `${file.path}: read returned a bad buffer`);
    }
    return data;
  };

  const write = async (
    ctx: SyscallContext,
    file: File,
    buffer: unknown,
    offset: number,
  ): Promise<number> => {
    const data = argBytes(buffer, 'buffer');
    if (!file.writable) throw new KernelError('EBADF', `${file.path} is not open for writing`);
    if (!file.fops.write) throw new KernelError('EINVAL', `${file.path} cannot be written`);
    const written = await file.fops.write(file, data.subarray(0, MAX_RW_COUNT), offset, ctx);
    if (!Number.isSafeInteger(written) || written < 0 || written > data.length) {
      throw new KernelError('EIO', `${file.path}: write returned ${String(written)}`);
    }
    return written;
  };

  /** `pread`/`pwrite`'s offset: only a seekable file has one (Linux's `FMODE_PREAD`), else `ESPIPE`. */
  const positional = (file: File, offset: unknown): number => {
    const at = argInt(offset, 'offset');
    if (at < 0) throw new KernelError('EINVAL', `negative offset ${at}`);
    if (!file.fops.llseek) throw new KernelError('ESPIPE', `${file.path} is not seekable`);
    return at;
  };

  table.register('read', async (ctx, fd, count) => {
    const file = fileOf(ctx.process, fd);
    const data = await read(ctx, file, count, file.pos);
    file.pos += data.length;
    return data;
  });

  table.register('write', async (ctx, fd, buffer) => {
    const file = fileOf(ctx.process, fd);
    const written = await write(ctx, file, buffer, file.pos);
    file.pos += written;
    return written;
  });

  table.register('pread', async (ctx, fd, count, offset) => {
    const file = fileOf(ctx.process, fd);
    return read(ctx, file, count, positional(file, offset));
  });

  table.register('pwrite', async (ctx, fd, buffer, offset) => {
    const file = fileOf(ctx.process, fd);
    return write(ctx, file, buffer, positional(file, offset));
  });

  table.register('lseek', (ctx, fd, offset, whence) => {
    const file = fileOf(ctx.process, fd);
    const how = argUint(whence, 'whence');
    if (how !== SEEK_SET && how !== SEEK_CUR && how !== SEEK_END) {
      throw new KernelError('EINVAL', `bad whence ${how}`);
    }
    if (!file.fops.llseek) throw new KernelError('ESPIPE', `${file.path} is not seekable`);
    const pos = file.fops.llseek(file, argInt(offset, 'offset'), how);
    if (!Number.isSafeInteger(pos) || pos < 0)
      throw new KernelError('EINVAL', `resulting offset ${pos}`);
    file.pos = pos;
    return pos;
  });

  table.register('ioctl', async (ctx, fd, cmd, arg) => {
    const file = fileOf(ctx.process, fd);
    if (typeof cmd !== 'number' || !Number.isInteger(cmd) || cmd < 0 || cmd > 0xffffffff) {
      throw new KernelError('EINVAL', `bad ioctl command ${String(cmd)}`);
    }
    const bytes = arg === null || arg === undefined ? null : argBytes(arg, 'ioctl argument');
    if (!file.fops.ioctl) throw new KernelError('ENOTTY', `${file.path} has no ioctls`);
    const value = await file.fops.ioctl(file, cmd, bytes, ctx);
    return { value, arg: bytes };
  });

  /**
   * A new fd for `file`: the fd is taken first, so a full table fails with `EMFILE` before the
   * new fd's file reference exists (a reference taken then would never be dropped).
   */
  const dupFd = (process: KernelProcess, file: File, cloexec: boolean, minFd = 0): number => {
    const fd = process.files.reserve(cloexec, minFd);
    process.files.fill(fd, vfs.fget(file));
    return fd;
  };

  table.register('dup', (ctx, fd) => dupFd(ctx.process, fileOf(ctx.process, fd), false));

  table.register('fcntl', (ctx, fd, cmd, arg) => {
    const number = argFd(fd);
    const file = ctx.process.files.get(number);
    switch (cmd) {
      case F_GETFD:
        return ctx.process.files.cloexec(number) ? FD_CLOEXEC : 0;
      case F_SETFD:
        ctx.process.files.setCloexec(number, (argUint(arg, 'arg') & FD_CLOEXEC) !== 0);
        return 0;
      case F_GETFL:
        return file.flags;
      case F_DUPFD:
      case F_DUPFD_CLOEXEC: {
        const min = argUint(arg, 'arg');
        if (min >= NR_OPEN_DEFAULT) throw new KernelError('EINVAL', `fd ${min} is above the limit`);
        return dupFd(ctx.process, file, cmd === F_DUPFD_CLOEXEC, min);
      }
      default:
        if (typeof cmd !== 'number' || !file.fops.fcntl) {
          throw new KernelError('EINVAL', `unknown fcntl command ${String(cmd)}`);
        }
        return file.fops.fcntl(file, cmd, argUint(arg, 'arg'));
    }
  });

  table.register('ftruncate', async (ctx, fd, length) => {
    const file = fileOf(ctx.process, fd);
    const size = argInt(length, 'length');
    if (size < 0) throw new KernelError('EINVAL', `negative length ${size}`);
    if (!file.writable) throw new KernelError('EINVAL', `${file.path} is not open for writing`);
    if (!file.fops.truncate) throw new KernelError('EINVAL', `${file.path} cannot be truncated`);
    await file.fops.truncate(file, size);
    return 0;
  });

  table.register('fallocate', async (ctx, fd, mode, offset, length) => {
    const file = fileOf(ctx.process, fd);
    const at = argInt(offset, 'offset');
    const len = argInt(length, 'length');
    if (at < 0 || len <= 0) throw new KernelError('EINVAL', `fallocate of ${len} bytes at ${at}`);
    if (!file.writable) throw new KernelError('EBADF', `${file.path} is not open for writing`);
    if (!file.fops.fallocate) throw new KernelError('EOPNOTSUPP', `${file.path} cannot fallocate`);
    await file.fops.fallocate(file, argUint(mode, 'mode'), at, len);
    return 0;
  });

  table.register('mmap', async (ctx, fd, length, offset) => {
    const file = fileOf(ctx.process, fd);
    const size = argUint(length, 'length');
    const at = argUint(offset, 'offset');
    if (size === 0 || at % PAGE_SIZE !== 0) {
      throw new KernelError('EINVAL', `mmap of ${size} bytes at offset ${at}`);
    }
    if (!file.readable) throw new KernelError('EACCES', `${file.path} is not open for reading`);
    if (!file.fops.mmap) throw new KernelError('ENODEV', `${file.path} cannot be mapped`);
    const segments = await file.fops.mmap(file, at, size);
    let covered = 0;
    const out = segments.map((segment) => {
      memory.check(segment.phys, segment.length);
      const entry = { offset: covered, phys: segment.phys, length: segment.length };
      covered += segment.length;
      return entry;
    });
    if (covered !== size)
      throw new KernelError('EIO', `${file.path}: mmap covered ${covered} of ${size} bytes`);
    const address = ctx.process.mapFile(vfs.fget(file), at, size);
    return { address, segments: out };
  });

  table.register('munmap', async (ctx, address) => {
    const mapping = ctx.process.mappings.get(argUint(address, 'address'));
    if (!mapping) throw new KernelError('EINVAL', `no mapping at ${String(address)}`);
    ctx.process.mappings.delete(address as number);
    await vfs.fput(mapping.file);
    return 0;
  });
}

/** Close every fd and mapping of `process` (exit, and the end of every process at kexec). */
export async function releaseProcessFiles(process: KernelProcess, vfs: Vfs): Promise<void> {
  const files = [
    ...process.files.removeAll(),
    ...[...process.mappings.values()].map((m) => m.file),
  ];
  process.mappings.clear();
  for (const file of files) await vfs.fput(file);
}
