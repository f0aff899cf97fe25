import { O_ACCMODE, O_APPEND, O_NONBLOCK, O_RDONLY, O_WRONLY } from '@liveupdate/machine';
import type { KernelProcess } from '../process-table.js';

/**
 * The open flags a file keeps for its life and that make it what it is to userspace: the access
 * mode (`O_RDONLY`, `O_WRONLY`, `O_RDWR`: whether `read`, `write`, `ftruncate`, `mmap` are
 * allowed) and the status flags `O_APPEND` and `O_NONBLOCK`. A LUO handler carries
 * `file.flags & FILE_STATUS_FLAGS` across a live update and gives it back to the retrieved file
 * (`vfs.reopenCharDevice`, `vfs.anonInodeGetFile`). `O_CLOEXEC` is the fd's, not the file's.
 */
export const FILE_STATUS_FLAGS = O_ACCMODE | O_APPEND | O_NONBLOCK;

/** Who is making the call a file operation serves. */
export interface SyscallContext {
  readonly process: KernelProcess;
}

/** A physically contiguous piece of a file mapping. */
export interface PhysicalSegment {
  readonly phys: number;
  readonly length: number;
}

/**
 * `struct file_operations`. Every op is optional; a missing one gives the errno Linux gives
 * (`read`/`write`: `EINVAL`, `llseek`: `ESPIPE` for `lseek`, `pread` and `pwrite` alike, `ioctl`:
 * `ENOTTY`, `mmap`: `ENODEV`, …). Ops may be
 * async, and signal failure by throwing a `KernelError`.
 */
export interface FileOperations {
  /** Called when a char device is opened, before the fd exists; a throw fails the open. */
  open?(file: File, ctx: SyscallContext): void | Promise<void>;
  /**
   * Read up to `count` bytes at `offset`; return fewer at end of file. A read that waits (an
   * eventfd) gives up with `EINTR` when `ctx.process.exiting` fires.
   */
  read?(
    file: File,
    count: number,
    offset: number,
    ctx: SyscallContext,
  ): Uint8Array | Promise<Uint8Array>;
  /** Write `data` at `offset`; return the number of bytes written. */
  write?(
    file: File,
    data: Uint8Array,
    offset: number,
    ctx: SyscallContext,
  ): number | Promise<number>;
  /**
   * Compute the new position for `lseek`; the VFS stores it. Also what makes a file positionable:
   * without it `lseek`, `pread` and `pwrite` fail with `ESPIPE` (a pipe's behaviour), even when
   * `read` and `write` work — give it to a file whose `read`/`write` honour `offset`.
   */
  llseek?(file: File, offset: number, whence: number): number;
  /** `arg` is the user's argument struct; changes to it are copied back to the caller. */
  ioctl?(
    file: File,
    cmd: number,
    arg: Uint8Array | null,
    ctx: SyscallContext,
  ): number | Promise<number>;
  /** `ftruncate`: set the file's size. Missing: `EINVAL`. */
  truncate?(file: File, length: number): void | Promise<void>;
  /** `fallocate(mode, offset, length)`. Missing: `EOPNOTSUPP`. */
  fallocate?(file: File, mode: number, offset: number, length: number): void | Promise<void>;
  /** `fcntl` commands the VFS does not handle itself (e.g. `F_ADD_SEALS`). Missing: `EINVAL`. */
  fcntl?(file: File, cmd: number, arg: number): number | Promise<number>;
  /** The RAM backing `[offset, offset + length)` of the file, for a zero-copy mapping. */
  mmap?(
    file: File,
    offset: number,
    length: number,
  ): readonly PhysicalSegment[] | Promise<readonly PhysicalSegment[]>;
  /** The last reference is gone (`fput`). Errors are logged, never returned. */
  release?(file: File): void | Promise<void>;
}

/**
 * `struct file`: an open file with its operations, private data, position and reference count.
 * References are taken and dropped with the VFS's `fget`/`fput`; the last `fput` calls `release`.
 */
export class File {
  /** The path it was opened by, or `anon_inode:[name]`. */
  readonly path: string;
  readonly fops: FileOperations;
  /** Open flags (`O_RDWR`, …). */
  readonly flags: number;
  /** The file's owner's data, like `file->private_data`. */
  privateData: unknown;
  /** Position for `read`/`write`/`lseek`. */
  pos = 0;
  /** @internal */
  refs = 1;
  /** @internal Called by the VFS after `release`. */
  onFinalPut: (() => void) | undefined;

  constructor(path: string, fops: FileOperations, flags: number, privateData?: unknown) {
    this.path = path;
    this.fops = fops;
    this.flags = flags;
    this.privateData = privateData;
  }

  get readable(): boolean {
    return (this.flags & O_ACCMODE) !== O_WRONLY;
  }

  get writable(): boolean {
    return (this.flags & O_ACCMODE) !== O_RDONLY;
  }

  /** Number of references (fds, mappings and kernel holders). */
  get refcount(): number {
    return this.refs;
  }
}
