import { inject, injectable } from 'tsyringe';
import { KernelError, O_ACCMODE, O_RDONLY, O_RDWR } from '@liveupdate/machine';
import { KernelLog } from '../kernel-log.js';
import type { KernelProcess } from '../process-table.js';
import { File, FILE_STATUS_FLAGS, type FileOperations, type SyscallContext } from './file.js';
import { sysfsFileOperations, type SysfsShow } from './sysfs-file.js';

/** Options of {@link Vfs.registerCharDevice}. */
export interface CharDeviceOptions {
  /** Only one open file at a time; another `open` gets `EBUSY` (like `/dev/liveupdate`). */
  readonly exclusive?: boolean;
}

interface CharDevice {
  readonly fops: FileOperations;
  readonly exclusive: boolean;
  /** A sysfs attribute (mode 0444): opened for writing it is `EACCES`. */
  readonly readOnly: boolean;
  open: number;
}

const DEV_PATH = /^\/dev\/[A-Za-z0-9._/-]{1,200}$/;
const SYS_PATH = /^\/sys\/[A-Za-z0-9._/-]{1,200}$/;

/**
 * The VFS: char devices by path, socket nodes (what `bind` of an `AF_UNIX` socket makes),
 * read-only sysfs attribute files, anonymous-inode files, file references (`fget`/`fput`) and fd
 * installation. There is no file system tree: paths are device nodes under `/dev`, attribute
 * files under `/sys` and socket nodes, each a name of its own, and files of other kinds (memfds,
 * sessions, …) are anon-inode files made by their subsystems.
 */
@injectable()
export class Vfs {
  readonly #devices = new Map<string, CharDevice>();
  readonly #socketNodes = new Map<string, object>();
  readonly #openFiles = new Set<File>();
  readonly #log: KernelLog;

  constructor(@inject(KernelLog) log: KernelLog) {
    this.#log = log;
  }

  /**
   * Files that hold references: each file the VFS made (`open`, `anonInodeGetFile`) or was
   * handed (`installFd`, `fget`; a subsystem's own `new File()` counts from then) until its final
   * `fput`. A count that does not come back down is a reference somebody kept (leak accounting).
   */
  get openFiles(): number {
    return this.#openFiles.size;
  }

  /** Register a char device node (`misc_register`). `EEXIST` when the path is taken. */
  registerCharDevice(path: string, fops: FileOperations, options: CharDeviceOptions = {}): void {
    if (typeof path !== 'string' || !DEV_PATH.test(path)) {
      throw new KernelError(
        'EINVAL',
        `char device path ${JSON.stringify(path)} must be /dev/<name>`,
      );
    }
    if (this.#devices.has(path)) throw new KernelError('EEXIST', `${path} is already registered`);
    this.#devices.set(path, {
      fops,
      exclusive: options.exclusive ?? false,
      readOnly: false,
      open: 0,
    });
  }

  /**
   * Register a read-only sysfs attribute file at `path` (`/sys/...`) whose text is `show()`,
   * taken when the file is opened. Opening it for writing is `EACCES` (mode 0444). `EEXIST` when
   * the path is taken; remove it with {@link unregisterCharDevice}.
   */
  registerSysfsFile(path: string, show: SysfsShow): void {
    if (typeof path !== 'string' || !SYS_PATH.test(path)) {
      throw new KernelError('EINVAL', `sysfs path ${JSON.stringify(path)} must be /sys/<name>`);
    }
    if (this.#devices.has(path)) throw new KernelError('EEXIST', `${path} is already registered`);
    this.#devices.set(path, {
      fops: sysfsFileOperations(show),
      exclusive: false,
      readOnly: true,
      open: 0,
    });
  }

  /** Remove a char device node or sysfs file; files already open keep working. `ENOENT` if absent. */
  unregisterCharDevice(path: string): void {
    if (!this.#devices.delete(path)) throw new KernelError('ENOENT', `${path} is not registered`);
  }

  /** Open a char device: a new file with one reference. */
  async open(path: string, flags: number, ctx: SyscallContext): Promise<File> {
    const device = this.#devices.get(path);
    if (!device) {
      // open(2) of a socket node: ENXIO, as Linux (a socket is reached with connect).
      if (this.#socketNodes.has(path)) throw new KernelError('ENXIO', `${path} is a socket`);
      throw new KernelError('ENOENT', `${path}: no such file or device`);
    }
    if ((flags & O_ACCMODE) === O_ACCMODE)
      throw new KernelError('EINVAL', `bad access mode in flags ${flags}`);
    if (device.readOnly && (flags & O_ACCMODE) !== O_RDONLY)
      throw new KernelError('EACCES', `${path} is read-only`);
    if (device.exclusive && device.open > 0)
      throw new KernelError('EBUSY', `${path} is already open`);
    const file = deviceFile(path, device, flags, undefined);
    try {
      await device.fops.open?.(file, ctx);
    } catch (error) {
      device.open--;
      throw error;
    }
    this.#openFiles.add(file);
    return file;
  }

  /**
   * A new file of the char device at `path`, as {@link open} would make it — the path, the
   * device's fops, `flags`, one reference, counted against an exclusive device — but with
   * `privateData` given rather than set by the device's `open` op, which is not called. A LUO
   * handler rebuilds a retrieved device file with it, so the file comes back as the same device
   * node opened the same way (not as an `anon_inode:[…]` file, nor read-write when it was
   * opened read-only).
   *
   * `flags` is what the file kept of its opening, `file.flags & FILE_STATUS_FLAGS` of the
   * preserved file: the access mode and the status flags (`O_APPEND`, `O_NONBLOCK`). `EINVAL`
   * for a path that is not `/dev/<name>`, the access mode `O_ACCMODE`, or any other bit (its
   * value named: open-time flags such as `O_CREAT`, and the fd flag `O_CLOEXEC`, which the
   * retrieved fd gets from `RETRIEVE_FD`, have no place in a file); `ENOENT` when no device is
   * registered at `path`; `EBUSY` when the device is exclusive and open.
   *
   * @example
   * ```ts
   * // preserve: writeSer(phys, { flags: args.file.flags & FILE_STATUS_FLAGS, ... })
   * retrieve(args) {
   *   const ser = readSer(phys); // check ser.flags against FILE_STATUS_FLAGS first: EINVAL
   *   args.file = ctx.vfs.reopenCharDevice('/dev/kvs', ser.flags, table);
   * },
   * ```
   */
  reopenCharDevice(path: string, flags: number, privateData: unknown): File {
    if (typeof path !== 'string' || !DEV_PATH.test(path)) {
      throw new KernelError(
        'EINVAL',
        `reopenCharDevice: path ${JSON.stringify(path)} must be /dev/<name>`,
      );
    }
    if (!Number.isInteger(flags) || flags < 0 || (flags & ~FILE_STATUS_FLAGS) !== 0) {
      throw new KernelError(
        'EINVAL',
        `reopenCharDevice: flags ${octalFlags(flags)} of ${path} hold bits a file does not keep (${octalFlags(FILE_STATUS_FLAGS)} are the access mode and status flags)`,
      );
    }
    if ((flags & O_ACCMODE) === O_ACCMODE) {
      throw new KernelError(
        'EINVAL',
        `reopenCharDevice: flags ${octalFlags(flags)} of ${path} have the access mode O_ACCMODE`,
      );
    }
    const device = this.#devices.get(path);
    if (!device) throw new KernelError('ENOENT', `reopenCharDevice: ${path}: no such device`);
    if (device.exclusive && device.open > 0)
      throw new KernelError('EBUSY', `${path} is already open`);
    const file = deviceFile(path, device, flags, privateData);
    this.#openFiles.add(file);
    return file;
  }

  /**
   * Make the socket node `path` for `socket` (what `bind` of a unix socket does). `EADDRINUSE`
   * when the path names a device or a socket node already, as Linux gives for an existing path.
   */
  mknodSocket(path: string, socket: object): void {
    if (this.#devices.has(path) || this.#socketNodes.has(path)) {
      throw new KernelError('EADDRINUSE', `${path} exists`);
    }
    this.#socketNodes.set(path, socket);
  }

  /**
   * What `path` names, for `connect`: the socket its node was made for, `'device'` for a char
   * device, `undefined` when nothing is there.
   */
  lookupSocket(path: string): object | 'device' | undefined {
    if (this.#devices.has(path)) return 'device';
    return this.#socketNodes.get(path);
  }

  /**
   * `unlink(2)` of a socket node: the name goes, the socket bound to it lives on. `ENOENT` when
   * nothing is at `path`; `EPERM` for a device node, which belongs to its driver here (there is
   * no `mknod` to make it again).
   */
  unlink(path: string): void {
    if (this.#devices.has(path)) throw new KernelError('EPERM', `${path} is a device node`);
    if (!this.#socketNodes.delete(path)) throw new KernelError('ENOENT', `${path}: no such file`);
  }

  /** `anon_inode_getfile()`: a file of a subsystem's own kind, with one reference. */
  anonInodeGetFile(name: string, fops: FileOperations, privateData: unknown, flags = O_RDWR): File {
    const file = new File(`anon_inode:[${name}]`, fops, flags, privateData);
    this.#openFiles.add(file);
    return file;
  }

  /** `get_file()`: take another reference on `file`. */
  fget(file: File): File {
    if (file.refs <= 0) throw new KernelError('EBADF', `${file.path}: use after final fput`);
    file.refs++;
    this.#openFiles.add(file);
    return file;
  }

  /** `fput()`: drop a reference; the last one runs `release`, whose errors are only logged. */
  async fput(file: File): Promise<void> {
    if (file.refs <= 0) throw new KernelError('EBADF', `${file.path}: fput after final fput`);
    if (--file.refs > 0) return;
    this.#openFiles.delete(file);
    try {
      await file.fops.release?.(file);
    } catch (error) {
      this.#log.warn(`VFS: release of ${file.path} failed: ${(error as Error).message}`);
    } finally {
      file.onFinalPut?.();
    }
  }

  /** `fd_install()`: give `file` an fd in `process`; the fd takes over the caller's reference. */
  installFd(process: KernelProcess, file: File, options: { cloexec?: boolean } = {}): number {
    const fd = process.files.install(file, options.cloexec ?? false);
    this.#openFiles.add(file);
    return fd;
  }
}

/** A file of `device`, counted open on it until its final `fput`. */
function deviceFile(path: string, device: CharDevice, flags: number, privateData: unknown): File {
  const file = new File(path, device.fops, flags, privateData);
  device.open++;
  file.onFinalPut = () => {
    device.open--;
  };
  return file;
}

function octalFlags(flags: number): string {
  return typeof flags === 'number' && Number.isInteger(flags) && flags >= 0
    ? `0o${flags.toString(8)}`
    : String(flags);
}
