import { KernelError, type Process } from '@liveupdate/machine';
import {
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_NAME_LENGTH,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  finishArg,
  getNameArg,
  preserveFdArg,
  retrieveFdArg,
} from '../liveupdate-uapi.js';
import { strnlen } from '../struct-codec.js';

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * A session fd, as returned by {@link LiveUpdateDevice.createSession} (outgoing: preserve files
 * into it before the kexec) or {@link LiveUpdateDevice.retrieveSession} (incoming: take the files
 * back out, then finish). Each method is one ioctl on {@link fd}; a failure rejects with the
 * kernel's `KernelError`, errno unchanged.
 *
 * The session lives as long as its fd: closing an outgoing session unpreserves its files, closing
 * an incoming one finishes it. Keep the fd open across `reboot()` to hand the session over.
 *
 * @example
 * ```ts
 * // Kernel N: preserve a memfd under token 1.
 * const device = await LiveUpdateDevice.open(process);
 * const session = await device.createSession('vm0');
 * await session.preserveFd(await process.memfdCreate('cache'), 1n);
 * await process.reboot(LINUX_REBOOT_CMD_KEXEC);
 *
 * // Kernel N+1: get it back.
 * const next = machine.spawn();
 * const incoming = await (await LiveUpdateDevice.open(next)).retrieveSession('vm0');
 * const memfd = await incoming.retrieveFd(1n);
 * await incoming.finish();
 * ```
 */
export class LiveUpdateSession {
  /** The process holding the session fd. */
  readonly process: Process;
  /** The session fd. */
  readonly fd: number;
  /**
   * The name the session was created or retrieved with, as text: its UTF-8 decoded, with U+FFFD
   * for bytes that are not UTF-8 (see {@link nameBytes}).
   */
  readonly name: string;
  /** The name's bytes, exactly as the kernel has them. */
  readonly nameBytes: Uint8Array;

  /** @internal Use {@link LiveUpdateDevice.createSession} or `retrieveSession`. */
  constructor(process: Process, fd: number, nameBytes: Uint8Array) {
    this.process = process;
    this.fd = fd;
    // The kernel took the bytes before the first NUL.
    this.nameBytes = nameBytes.slice(0, strnlen(nameBytes, nameBytes.length));
    this.name = utf8Decoder.decode(this.nameBytes);
  }

  /**
   * `LIVEUPDATE_SESSION_PRESERVE_FD`: preserve the file behind `fd` under `token` (unique in this
   * session). The kernel keeps its own reference, so `fd` may be closed right after.
   */
  async preserveFd(fd: number, token: bigint | number): Promise<void> {
    const arg = preserveFdArg.encode({ size: preserveFdArg.size, fd, token: toToken(token) });
    await this.process.ioctl(this.fd, LIVEUPDATE_SESSION_PRESERVE_FD, arg);
  }

  /**
   * `LIVEUPDATE_SESSION_RETRIEVE_FD`: a new fd (`O_CLOEXEC`) for the file preserved under
   * `token`. Retrieving a token again gives another fd to the same file.
   */
  async retrieveFd(token: bigint | number): Promise<number> {
    const arg = retrieveFdArg.encode({ size: retrieveFdArg.size, fd: 0, token: toToken(token) });
    await this.process.ioctl(this.fd, LIVEUPDATE_SESSION_RETRIEVE_FD, arg);
    return retrieveFdArg.decode(arg).fd;
  }

  /**
   * `LIVEUPDATE_SESSION_FINISH`: end the incoming session's live update; files not retrieved are
   * discarded. `EBUSY` when a handler refuses (retry later).
   */
  async finish(): Promise<void> {
    const arg = finishArg.encode({ size: finishArg.size, reserved: 0 });
    await this.process.ioctl(this.fd, LIVEUPDATE_SESSION_FINISH, arg);
  }

  /**
   * `LIVEUPDATE_SESSION_GET_NAME`: the session's name as text, decoded as {@link name} is; use
   * {@link getNameBytes} for a name that may not be UTF-8.
   */
  async getName(): Promise<string> {
    return utf8Decoder.decode(await this.getNameBytes());
  }

  /** `LIVEUPDATE_SESSION_GET_NAME`: the session's name, byte for byte as the kernel has it. */
  async getNameBytes(): Promise<Uint8Array> {
    const arg = getNameArg.encode({
      size: getNameArg.size,
      reserved: 0,
      name: new Uint8Array(LIVEUPDATE_SESSION_NAME_LENGTH),
    });
    await this.process.ioctl(this.fd, LIVEUPDATE_SESSION_GET_NAME, arg);
    const { name } = getNameArg.decode(arg);
    return name.slice(0, strnlen(name, name.length));
  }

  /** `close(2)` of the session fd: unpreserves an outgoing session, finishes an incoming one. */
  async close(): Promise<void> {
    await this.process.close(this.fd);
  }
}

/**
 * A session name as the uAPI's `name[64]` bytes: a string's UTF-8, or a copy of the bytes given.
 * Only a name that does not fit in 64 bytes at all is refused here; the kernel judges the rest
 * (empty, or no room for the NUL).
 */
export function encodeSessionName(name: string | Uint8Array): Uint8Array {
  const encoded = typeof name === 'string' ? utf8.encode(name) : name.slice();
  if (encoded.length > LIVEUPDATE_SESSION_NAME_LENGTH) {
    throw new KernelError(
      'EINVAL',
      `session name of ${encoded.length} bytes does not fit in ${LIVEUPDATE_SESSION_NAME_LENGTH}`,
    );
  }
  return encoded;
}

function toToken(token: bigint | number): bigint {
  if (typeof token === 'number' && !Number.isSafeInteger(token)) {
    throw new RangeError(`token ${token} is not an integer`);
  }
  // The codec refuses anything outside 0..2^64-1.
  return BigInt(token);
}
