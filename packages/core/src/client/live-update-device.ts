import { O_RDWR, type Process } from '@liveupdate/machine';
import {
  LIVEUPDATE_CHECK_REPORT_LENGTH,
  LIVEUPDATE_CHECK_VERSION_LENGTH,
  LIVEUPDATE_IOCTL_CHECK_KEXEC,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  checkKexecArg,
  createSessionArg,
  retrieveSessionArg,
} from '../liveupdate-uapi.js';

/** What {@link LiveUpdateDevice.checkKexec} found. */
export interface KexecCheckReport {
  /** The loaded kernel reads everything a kexec now would hand over: `reboot` would go on. */
  readonly ok: boolean;
  /** The loaded kernel's version (`uname -r` of the image). */
  readonly version: string;
  /** What it cannot read, one line each (as many as fit one page; see {@link problemCount}). */
  readonly problems: readonly string[];
  /** How many problems there are, listed or not. */
  readonly problemCount: number;
}
import { LiveUpdateSession, encodeSessionName } from './live-update-session.js';

/** Path of the LUO device node. */
export const LIVEUPDATE_DEVICE_PATH = '/dev/liveupdate';

/**
 * `/dev/liveupdate`, opened by a process: creates outgoing sessions and retrieves incoming ones.
 * Each method is one syscall; a failure rejects with the kernel's `KernelError`, errno unchanged.
 *
 * Only one open of the device exists at a time (`EBUSY` for the second). Closing it does not
 * affect sessions, which live as long as their own fds.
 *
 * @example
 * ```ts
 * const machine = Machine.create({ ramBytes: 64 * 1024 * 1024 });
 * await machine.boot(
 *   createKernelImage({ cmdline: 'kho=on liveupdate=on', modules: ['@liveupdate/core/module'] }),
 * );
 * const process = machine.spawn();
 * const device = await LiveUpdateDevice.open(process);
 * const session = await device.createSession('vm0');
 * await session.getName(); // 'vm0'
 * await device.close(); // the session stays
 * ```
 */
export class LiveUpdateDevice {
  /** The process holding the device fd. */
  readonly process: Process;
  /** The fd of `/dev/liveupdate`. */
  readonly fd: number;

  private constructor(process: Process, fd: number) {
    this.process = process;
    this.fd = fd;
  }

  /**
   * Open `/dev/liveupdate` (`O_RDWR` unless `flags` says otherwise). The first open after a live
   * update deserializes the incoming sessions. `ENOENT` when LUO is disabled, `EBUSY` when the
   * device is already open, `EIO` when the incoming data could not be deserialized.
   */
  static async open(process: Process, flags: number = O_RDWR): Promise<LiveUpdateDevice> {
    return new LiveUpdateDevice(process, await process.open(LIVEUPDATE_DEVICE_PATH, flags));
  }

  /**
   * `LIVEUPDATE_IOCTL_CREATE_SESSION`: a new outgoing session. `name` is 1..63 bytes: a string's
   * UTF-8, or the bytes themselves, of any value (the kernel takes those before the first NUL).
   * It must be unique among outgoing sessions, compared as bytes (`EINVAL`, `EEXIST`).
   */
  async createSession(name: string | Uint8Array): Promise<LiveUpdateSession> {
    const bytes = encodeSessionName(name);
    const arg = createSessionArg.encode({ size: createSessionArg.size, fd: 0, name: bytes });
    await this.process.ioctl(this.fd, LIVEUPDATE_IOCTL_CREATE_SESSION, arg);
    return new LiveUpdateSession(this.process, createSessionArg.decode(arg).fd, bytes);
  }

  /**
   * `LIVEUPDATE_IOCTL_CHECK_KEXEC` (an extension of this project): whether the kernel loaded with
   * `kexec_load` can read every file of every outgoing session, every FLB, the LUO and KHO roots
   * and the devices' state as a kexec now would write them — what `reboot` checks before it
   * freezes anything, when it fails with `ENOEXEC`. Changes nothing. `ENOENT` when no kernel is
   * loaded.
   */
  async checkKexec(): Promise<KexecCheckReport> {
    const arg = checkKexecArg.encode({
      size: checkKexecArg.size,
      flags: 0,
      status: 0,
      nr_problems: 0,
      version: new Uint8Array(LIVEUPDATE_CHECK_VERSION_LENGTH),
      report: new Uint8Array(LIVEUPDATE_CHECK_REPORT_LENGTH),
    });
    await this.process.ioctl(this.fd, LIVEUPDATE_IOCTL_CHECK_KEXEC, arg);
    const out = checkKexecArg.decode(arg);
    const text = (bytes: Uint8Array): string => {
      const nul = bytes.indexOf(0);
      return new TextDecoder().decode(nul < 0 ? bytes : bytes.subarray(0, nul));
    };
    const report = text(out.report);
    return {
      ok: out.status === 0,
      version: text(out.version),
      problems: report === '' ? [] : report.split('\n'),
      problemCount: out.nr_problems,
    };
  }

  /**
   * `LIVEUPDATE_IOCTL_RETRIEVE_SESSION`: the session `name` (a string's UTF-8, or bytes, as in
   * {@link createSession}) handed over by the previous kernel. Once per session (`EINVAL` the
   * second time); `ENOENT` for a name that was not handed over.
   */
  async retrieveSession(name: string | Uint8Array): Promise<LiveUpdateSession> {
    const bytes = encodeSessionName(name);
    const arg = retrieveSessionArg.encode({ size: retrieveSessionArg.size, fd: 0, name: bytes });
    await this.process.ioctl(this.fd, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, arg);
    return new LiveUpdateSession(this.process, retrieveSessionArg.decode(arg).fd, bytes);
  }

  /** `close(2)` of the device fd. */
  async close(): Promise<void> {
    await this.process.close(this.fd);
  }
}
