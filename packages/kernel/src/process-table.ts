import { KernelError, PAGE_SIZE } from '@liveupdate/machine';
import { FdTable } from './vfs/fd-table.js';
import type { File } from './vfs/file.js';

/** A mapping made by `mmap`; it holds a reference on its file until `munmap` or exit. */
export interface FileMapping {
  readonly file: File;
  readonly offset: number;
  readonly length: number;
}

/** Where mappings start in a process's (pretend) address space. */
const MMAP_BASE = 0x7f00_0000_0000;

/** The kernel's view of a userspace process (`struct task_struct`, the parts we need). */
export class KernelProcess {
  readonly pid: number;
  readonly files = new FdTable();
  /** Mappings by address. */
  readonly mappings = new Map<number, FileMapping>();
  readonly #exit = new AbortController();
  /** Syscalls of this process that entered the kernel and have not returned. */
  readonly #inFlight = new Set<Promise<unknown>>();
  #nextAddress = MMAP_BASE;

  /** Fires when the process exits: a syscall still waiting on its behalf gives up (`EINTR`). */
  get exiting(): AbortSignal {
    return this.#exit.signal;
  }

  /**
   * Run one syscall of this process. Once `exit` has begun the process runs no new syscall:
   * `ESRCH`, as for a process that has ended, and nothing it could install survives the exit.
   */
  syscall<T>(name: string, call: () => Promise<T>): Promise<T> {
    if (this.#exit.signal.aborted) {
      return Promise.reject(new KernelError('ESRCH', `${name}: process ${this.pid} is exiting`));
    }
    const running = call();
    this.#inFlight.add(running);
    const done = (): void => {
      this.#inFlight.delete(running);
    };
    running.then(done, done);
    return running;
  }

  /**
   * @internal The start of the `exit` syscall (`do_exit`): refuse new syscalls, wake those that
   * wait (`EINTR`), and resolve once every syscall in flight has returned, so the fd table is
   * released after the last fd one of them installs (as Linux puts `files_struct` after the
   * last thread). `ESRCH` when the process is exiting already.
   */
  async beginExit(): Promise<void> {
    if (this.#exit.signal.aborted) {
      throw new KernelError('ESRCH', `exit: process ${this.pid} is exiting`);
    }
    this.#exit.abort();
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
  }

  constructor(pid: number) {
    this.pid = pid;
  }

  /** Record a mapping of `file` (whose reference it takes over); returns its address. */
  mapFile(file: File, offset: number, length: number): number {
    const address = this.#nextAddress;
    this.#nextAddress += Math.ceil(length / PAGE_SIZE) * PAGE_SIZE + PAGE_SIZE;
    this.mappings.set(address, { file, offset, length });
    return address;
  }
}

/** Processes of this kernel by pid. */
export class ProcessTable {
  readonly #processes = new Map<number, KernelProcess>();

  create(pid: number): KernelProcess {
    const process = new KernelProcess(pid);
    this.#processes.set(pid, process);
    return process;
  }

  /** `ESRCH` when `pid` does not run on this kernel. */
  get(pid: number): KernelProcess {
    const process = this.#processes.get(pid);
    if (!process) throw new KernelError('ESRCH', `no process ${pid}`);
    return process;
  }

  remove(pid: number): void {
    this.#processes.delete(pid);
  }

  get size(): number {
    return this.#processes.size;
  }
}
