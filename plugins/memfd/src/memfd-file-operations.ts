import { KernelError, PAGE_SIZE, type File, type FileOperations } from '@liveupdate/kernel';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
} from '@liveupdate/machine';
import { MemfdInode, pagesFor } from './memfd-inode.js';

/** Every seal Linux knows (`F_ALL_SEALS`); other bits are `EINVAL` for `F_ADD_SEALS`. */
export const F_ALL_SEALS =
  F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE | F_SEAL_EXEC;

/** The largest file size: offsets are JS safe integers here (Linux: `MAX_LFS_FILESIZE`). */
const MAX_FILE_SIZE = Number.MAX_SAFE_INTEGER;

/** The inode behind a memfd file (see {@link memfdFileOperations}). */
export function memfdInode(file: File): MemfdInode {
  return file.privateData as MemfdInode;
}

function checkFileSize(end: number): void {
  if (end > MAX_FILE_SIZE) throw new KernelError('EFBIG', `memfd: ${end} bytes is too large`);
}

/**
 * A memfd's `file_operations`: shmem's, with the seal rules of `mm/memfd.c` and `mm/shmem.c` and
 * the size freeze LUO sets while the memfd is preserved (`SHMEM_F_MAPPING_FROZEN`: every size
 * change is `EPERM`). The file's private data is its {@link MemfdInode}.
 */
export const memfdFileOperations: FileOperations = {
  read(file, count, offset) {
    return memfdInode(file).read(offset, count);
  },

  write(file, data, offset) {
    const inode = memfdInode(file);
    if (data.length === 0) return 0;
    const end = offset + data.length;
    checkFileSize(end);
    if (inode.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) {
      throw new KernelError('EPERM', `memfd: ${file.path} is sealed against writes`);
    }
    if (end > inode.size && inode.seals & F_SEAL_GROW) {
      throw new KernelError('EPERM', `memfd: ${file.path} is sealed against growing`);
    }
    if (end > inode.size && inode.frozen) {
      throw new KernelError(
        'EPERM',
        `memfd: ${file.path} is preserved for a live update; its size is frozen`,
      );
    }
    return inode.write(offset, data);
  },

  llseek(file, offset, whence) {
    if (whence !== SEEK_SET && whence !== SEEK_CUR && whence !== SEEK_END) {
      throw new KernelError('EINVAL', `memfd: bad whence ${whence}`);
    }
    const base = whence === SEEK_SET ? 0 : whence === SEEK_CUR ? file.pos : memfdInode(file).size;
    const pos = base + offset;
    if (pos < 0 || pos > MAX_FILE_SIZE) {
      throw new KernelError('EINVAL', `memfd: cannot seek to ${pos}`);
    }
    return pos;
  },

  truncate(file, length) {
    const inode = memfdInode(file);
    checkFileSize(length);
    if (length < inode.size && inode.seals & F_SEAL_SHRINK) {
      throw new KernelError('EPERM', `memfd: ${file.path} is sealed against shrinking`);
    }
    if (length > inode.size && inode.seals & F_SEAL_GROW) {
      throw new KernelError('EPERM', `memfd: ${file.path} is sealed against growing`);
    }
    if (length === inode.size) return;
    if (inode.frozen) {
      throw new KernelError(
        'EPERM',
        `memfd: ${file.path} is preserved for a live update; its size is frozen`,
      );
    }
    inode.setSize(length);
  },

  fallocate(file, mode, offset, length) {
    const inode = memfdInode(file);
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) {
      throw new KernelError('EOPNOTSUPP', `memfd: fallocate mode ${mode} is not supported`);
    }
    // vfs_fallocate(): punching a hole must keep the size.
    if (mode & FALLOC_FL_PUNCH_HOLE && !(mode & FALLOC_FL_KEEP_SIZE)) {
      throw new KernelError('EOPNOTSUPP', 'memfd: FALLOC_FL_PUNCH_HOLE needs FALLOC_FL_KEEP_SIZE');
    }
    const end = offset + length;
    checkFileSize(end);
    if (inode.frozen) {
      throw new KernelError(
        'EPERM',
        `memfd: ${file.path} is preserved for a live update; fallocate is refused`,
      );
    }
    if (mode & FALLOC_FL_PUNCH_HOLE) {
      if (inode.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) {
        throw new KernelError('EPERM', `memfd: ${file.path} is sealed against writes`);
      }
      inode.punchHole(offset, end);
      return;
    }
    if (end > inode.size && inode.seals & F_SEAL_GROW) {
      throw new KernelError('EPERM', `memfd: ${file.path} is sealed against growing`);
    }
    const keepSize = (mode & FALLOC_FL_KEEP_SIZE) !== 0;
    const limit = keepSize ? pagesFor(inode.size) : Math.max(pagesFor(inode.size), pagesFor(end));
    inode.allocateRange(Math.floor(offset / PAGE_SIZE), pagesFor(end), limit);
    if (!keepSize && end > inode.size) inode.setSize(end);
  },

  fcntl(file, cmd, arg) {
    const inode = memfdInode(file);
    if (cmd === F_GET_SEALS) return inode.seals;
    if (cmd !== F_ADD_SEALS) throw new KernelError('EINVAL', `memfd: unknown fcntl command ${cmd}`);
    // memfd_add_seals(), in its order of checks.
    if (!file.writable) {
      throw new KernelError('EPERM', `memfd: ${file.path} is not open for writing`);
    }
    if (arg & ~F_ALL_SEALS) throw new KernelError('EINVAL', `memfd: unknown seals ${arg}`);
    if (inode.seals & F_SEAL_SEAL) {
      throw new KernelError('EPERM', `memfd: ${file.path} is sealed against new seals`);
    }
    let seals = arg;
    // F_SEAL_EXEC implies the write seals on an executable memfd (W^X); memfds are 0777 here.
    if (seals & F_SEAL_EXEC)
      seals |= F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
    inode.seals |= seals;
    return 0;
  },

  mmap(file, offset, length) {
    return memfdInode(file).segments(offset, length);
  },

  release(file) {
    const inode = memfdInode(file);
    if (--inode.openFiles === 0) inode.evict();
  },
};
