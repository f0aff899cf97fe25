import { KernelError } from '@liveupdate/machine';
import type { File } from './file.js';

/** `RLIMIT_NOFILE`'s usual soft limit. */
export const NR_OPEN_DEFAULT = 1024;

interface FdEntry {
  /** `null` while the fd is reserved and not installed yet. */
  file: File | null;
  cloexec: boolean;
}

/**
 * A process's file descriptor table. Installing an fd takes over the caller's file reference;
 * removing one hands it back (the caller `fput`s it).
 */
export class FdTable {
  readonly #entries: (FdEntry | undefined)[] = [];

  /** Install `file` at the lowest free fd (at least `minFd`). `EMFILE` when the table is full. */
  install(file: File, cloexec: boolean, minFd = 0): number {
    const fd = this.reserve(cloexec, minFd);
    this.#entries[fd]!.file = file;
    return fd;
  }

  /**
   * `get_unused_fd_flags()`: take the lowest free fd without a file yet, so a syscall can fail
   * with `EMFILE` before it does anything else. Complete with {@link fill}, or give it back with
   * {@link unreserve}. A reserved fd is not open (`EBADF`) until filled.
   */
  reserve(cloexec: boolean, minFd = 0): number {
    let fd = minFd;
    while (fd < NR_OPEN_DEFAULT && this.#entries[fd]) fd++;
    if (fd >= NR_OPEN_DEFAULT) {
      throw new KernelError('EMFILE', `no free fd below ${NR_OPEN_DEFAULT}`);
    }
    this.#entries[fd] = { file: null, cloexec };
    return fd;
  }

  /** `fd_install()`: put `file` (the caller's reference) into the fd {@link reserve} returned. */
  fill(fd: number, file: File): void {
    const entry = this.#entries[fd];
    if (!entry || entry.file) throw new KernelError('EBADF', `fd ${fd} is not reserved`);
    entry.file = file;
  }

  /** `put_unused_fd()`: give back a reserved fd that was never filled. */
  unreserve(fd: number): void {
    if (this.#entries[fd]?.file === null) this.#entries[fd] = undefined;
  }

  /** The file at `fd`. `EBADF` when `fd` is not open. */
  get(fd: number): File {
    return this.#entry(fd).file;
  }

  /** Remove `fd` and return its file (whose reference the caller now owns). */
  remove(fd: number): File {
    const entry = this.#entry(fd);
    this.#entries[fd] = undefined;
    return entry.file;
  }

  cloexec(fd: number): boolean {
    return this.#entry(fd).cloexec;
  }

  setCloexec(fd: number, cloexec: boolean): void {
    this.#entry(fd).cloexec = cloexec;
  }

  /** Remove every fd and return their files. */
  removeAll(): File[] {
    const files = this.#entries.flatMap((entry) => (entry?.file ? [entry.file] : []));
    this.#entries.length = 0;
    return files;
  }

  /** Number of open fds. */
  get size(): number {
    return this.#entries.filter((entry) => entry?.file).length;
  }

  #entry(fd: number): FdEntry & { file: File } {
    const entry = Number.isInteger(fd) && fd >= 0 ? this.#entries[fd] : undefined;
    if (!entry?.file) throw new KernelError('EBADF', `fd ${String(fd)} is not open`);
    return entry as FdEntry & { file: File };
  }
}
