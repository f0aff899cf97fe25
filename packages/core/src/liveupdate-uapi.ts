/**
 * The uAPI of `<linux/liveupdate.h>`: ioctl numbers and argument structs of `/dev/liveupdate` and
 * of session fds, shared by the kernel side (the orchestrator's ioctl dispatch) and the userspace
 * client. Every argument struct starts with `__u32 size`, which the caller sets to the struct's
 * size; the kernel accepts larger structs whose tail is zero (see {@link copyStructFromUser}).
 */
import { KernelError, hex } from '@liveupdate/machine';
import { bytes, defineStruct, s32, u32, u64, type StructCodec } from './struct-codec.js';

/** The ioctl type byte of every LUO command. */
export const LIVEUPDATE_IOCTL_TYPE = 0xba;
/** Size of a session name field, NUL included: a valid name is 1..63 bytes. */
export const LIVEUPDATE_SESSION_NAME_LENGTH = 64;
/** First command number (`nr`) of `/dev/liveupdate`. */
export const LIVEUPDATE_CMD_BASE = 0x00;
/** First command number (`nr`) of a session fd. */
export const LIVEUPDATE_CMD_SESSION_BASE = 0x40;

/**
 * `_IO(type, nr)`: a command with direction NONE and size 0, which is how every LUO ioctl is
 * numbered (the struct size travels in the struct's own `size` field instead).
 */
export function _IO(type: number, nr: number): number {
  return (type << 8) | nr;
}

/** `/dev/liveupdate`: create an outgoing session; argument {@link createSessionArg}. */
export const LIVEUPDATE_IOCTL_CREATE_SESSION = _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_BASE);
/** `/dev/liveupdate`: retrieve an incoming session; argument {@link retrieveSessionArg}. */
export const LIVEUPDATE_IOCTL_RETRIEVE_SESSION = _IO(
  LIVEUPDATE_IOCTL_TYPE,
  LIVEUPDATE_CMD_BASE + 1,
);
/** Session fd: preserve a file under a token; argument {@link preserveFdArg}. */
export const LIVEUPDATE_SESSION_PRESERVE_FD = _IO(
  LIVEUPDATE_IOCTL_TYPE,
  LIVEUPDATE_CMD_SESSION_BASE,
);
/** Session fd: get a new fd for a preserved file; argument {@link retrieveFdArg}. */
export const LIVEUPDATE_SESSION_RETRIEVE_FD = _IO(
  LIVEUPDATE_IOCTL_TYPE,
  LIVEUPDATE_CMD_SESSION_BASE + 1,
);
/** Session fd: finish an incoming session; argument {@link finishArg}. */
export const LIVEUPDATE_SESSION_FINISH = _IO(
  LIVEUPDATE_IOCTL_TYPE,
  LIVEUPDATE_CMD_SESSION_BASE + 2,
);
/** Session fd: read the session's name (a G2 addition); argument {@link getNameArg}. */
export const LIVEUPDATE_SESSION_GET_NAME = _IO(
  LIVEUPDATE_IOCTL_TYPE,
  LIVEUPDATE_CMD_SESSION_BASE + 3,
);

/**
 * `struct liveupdate_ioctl_create_session` (72 bytes): `size` u32 @0 in, `fd` s32 @4 out, `name`
 * u8[64] @8 in. The name stays raw bytes: the kernel judges it with `strnlen` (`EINVAL` when it is
 * empty or has no NUL within 64 bytes).
 */
export const createSessionArg = defineStruct('liveupdate_ioctl_create_session', [
  ['size', u32],
  ['fd', s32],
  ['name', bytes(LIVEUPDATE_SESSION_NAME_LENGTH)],
] as const);

/** `struct liveupdate_ioctl_retrieve_session` (72 bytes): same layout as {@link createSessionArg}. */
export const retrieveSessionArg = defineStruct('liveupdate_ioctl_retrieve_session', [
  ['size', u32],
  ['fd', s32],
  ['name', bytes(LIVEUPDATE_SESSION_NAME_LENGTH)],
] as const);

/** `struct liveupdate_session_preserve_fd` (16 bytes): `size` @0, `fd` @4 in, `token` u64 @8 in. */
export const preserveFdArg = defineStruct('liveupdate_session_preserve_fd', [
  ['size', u32],
  ['fd', s32],
  ['token', u64],
] as const);

/** `struct liveupdate_session_retrieve_fd` (16 bytes): `size` @0, `fd` @4 out, `token` u64 @8 in. */
export const retrieveFdArg = defineStruct('liveupdate_session_retrieve_fd', [
  ['size', u32],
  ['fd', s32],
  ['token', u64],
] as const);

/**
 * `struct liveupdate_session_finish` (8 bytes): `size` @0, `reserved` u32 @4, documented as "must
 * be zero" but not checked by the kernel.
 */
export const finishArg = defineStruct('liveupdate_session_finish', [
  ['size', u32],
  ['reserved', u32],
] as const);

/**
 * `struct liveupdate_session_get_name` (72 bytes): `size` @0, `reserved` u32 @4 (non-zero is
 * `EINVAL`), `name` u8[64] @8 out, NUL-terminated.
 */
export const getNameArg = defineStruct('liveupdate_session_get_name', [
  ['size', u32],
  ['reserved', u32],
  ['name', bytes(LIVEUPDATE_SESSION_NAME_LENGTH)],
] as const);

/** One slot of an ioctl table: the exact command number and its argument struct. */
/**
 * First command number of this project's extensions to the uAPI, apart from upstream's device
 * (`0x00`…) and session (`0x40`…) ranges so that a future upstream ioctl cannot collide.
 */
export const LIVEUPDATE_CMD_EXT_BASE = 0x80;

/**
 * `LIVEUPDATE_IOCTL_CHECK_KEXEC` (extension, `0xBA80`) on `/dev/liveupdate`: can the kernel loaded
 * with `kexec_load` read everything a kexec now would hand over? It runs the same checks as
 * `reboot(LINUX_REBOOT_CMD_KEXEC)` and changes nothing: ask it before pausing a workload. Errors:
 * `ENOENT` when no kernel is loaded, `EINVAL` for nonzero `flags`; otherwise it succeeds and
 * `status` carries the answer.
 */
export const LIVEUPDATE_IOCTL_CHECK_KEXEC = _IO(LIVEUPDATE_IOCTL_TYPE, LIVEUPDATE_CMD_EXT_BASE);

/** Bytes of `liveupdate_ioctl_check_kexec.version`. */
export const LIVEUPDATE_CHECK_VERSION_LENGTH = 64;
/** Bytes of `liveupdate_ioctl_check_kexec.report`: the struct is one 4 KiB page. */
export const LIVEUPDATE_CHECK_REPORT_LENGTH = 4096 - 16 - LIVEUPDATE_CHECK_VERSION_LENGTH;

/**
 * `struct liveupdate_ioctl_check_kexec` (4096 bytes): `size` u32 @0 (in), `flags` u32 @4 (in, must
 * be 0), `status` u32 @8 (out: 0 when the loaded kernel reads everything, else `ENOEXEC`, the
 * errno `reboot` would return), `nr_problems` u32 @12 (out), `version` char[64] @16 (out: the
 * loaded kernel's version, NUL-padded, cut to 63 bytes), `report` char[4016] @80 (out: one problem
 * per line, `\n`-separated, NUL-terminated; cut at a line when too long — `nr_problems` counts
 * them all).
 */
export const checkKexecArg = defineStruct('liveupdate_ioctl_check_kexec', [
  ['size', u32],
  ['flags', u32],
  ['status', u32],
  ['nr_problems', u32],
  ['version', bytes(LIVEUPDATE_CHECK_VERSION_LENGTH)],
  ['report', bytes(LIVEUPDATE_CHECK_REPORT_LENGTH)],
] as const);

export interface IoctlEntry {
  readonly cmd: number;
  readonly arg: StructCodec<unknown>;
}

/** The ioctls of `/dev/liveupdate`, from `nr` = {@link LIVEUPDATE_CMD_BASE} on. */
export const LIVEUPDATE_DEVICE_IOCTLS: readonly IoctlEntry[] = [
  { cmd: LIVEUPDATE_IOCTL_CREATE_SESSION, arg: createSessionArg },
  { cmd: LIVEUPDATE_IOCTL_RETRIEVE_SESSION, arg: retrieveSessionArg },
];

/** The ioctls of a session fd, from `nr` = {@link LIVEUPDATE_CMD_SESSION_BASE} on. */
/** This project's extensions on `/dev/liveupdate`, numbered from {@link LIVEUPDATE_CMD_EXT_BASE}. */
export const LIVEUPDATE_EXT_IOCTLS: readonly IoctlEntry[] = [
  { cmd: LIVEUPDATE_IOCTL_CHECK_KEXEC, arg: checkKexecArg },
];

export const LIVEUPDATE_SESSION_IOCTLS: readonly IoctlEntry[] = [
  { cmd: LIVEUPDATE_SESSION_PRESERVE_FD, arg: preserveFdArg },
  { cmd: LIVEUPDATE_SESSION_RETRIEVE_FD, arg: retrieveFdArg },
  { cmd: LIVEUPDATE_SESSION_FINISH, arg: finishArg },
  { cmd: LIVEUPDATE_SESSION_GET_NAME, arg: getNameArg },
];

/**
 * The first three checks of an ioctl dispatch (`luo_ioctl()`, `luo_session_ioctl()`), in
 * upstream's order: find `cmd`'s slot in `table`, the ops from `nr` = `base` on.
 *
 * 1. `nr` (the low byte of `cmd`) outside `[base, base + table.length)` → `EINVAL`, not `ENOTTY`.
 * 2. `get_user(size)`: `arg` missing or shorter than its `size` field → `EFAULT`, whatever the
 *    rest of `cmd` says.
 * 3. The slot's command is not exactly `cmd` (another type byte, or direction or size bits) →
 *    `ENOTTY` (the kernel's `-ENOIOCTLCMD`).
 *
 * The caller then checks the session's direction (`EINVAL`) and reads the struct with
 * {@link copyStructFromUser} (`min_size`, then `copy_struct_from_user`).
 *
 * @returns the index of `cmd` in `table`
 * @throws KernelError `EINVAL`, `EFAULT` or `ENOTTY` as above
 */
export function ioctlIndex(
  cmd: number,
  arg: Uint8Array | null,
  table: readonly IoctlEntry[],
  base: number,
): number {
  const nr = cmd & 0xff;
  const entry = nr >= base ? table[nr - base] : undefined;
  if (!entry) {
    throw new KernelError(
      'EINVAL',
      `ioctl ${hex(cmd)}: command number ${hex(nr)} is outside ${hex(base)}..${hex(base + table.length - 1)}`,
    );
  }
  getUserSize(entry.arg, arg);
  if (entry.cmd !== cmd) {
    throw new KernelError(
      'ENOTTY',
      `ioctl ${hex(cmd)} is not ${hex(entry.cmd)}: type, direction or size bits differ`,
    );
  }
  return nr - base;
}

/**
 * Read an ioctl argument struct from userspace, as the `min_size` check and
 * `copy_struct_from_user()` do after {@link ioctlIndex}. `arg` is the user buffer: bytes past its
 * end are unmapped.
 *
 * - `arg` missing or shorter than the `size` field → `EFAULT`;
 * - `size` smaller than the struct (`min_size`, which is the full size for every LUO struct) →
 *   `EINVAL`;
 * - `size` larger than the struct: its extra bytes are read in order, and the first non-zero one
 *   is `E2BIG` (a zero tail is a newer userspace's struct with fields this kernel ignores), while
 *   reaching the end of `arg` first is `EFAULT`.
 *
 * @returns the first `codec.size` bytes decoded; its `size` field is the user's size
 * @throws KernelError `EFAULT`, `EINVAL` or `E2BIG`, naming the struct
 */
export function copyStructFromUser<T>(codec: StructCodec<T>, arg: Uint8Array | null): T {
  const { buffer, userSize } = getUserSize(codec, arg);
  if (userSize < codec.size) {
    throw new KernelError(
      'EINVAL',
      `${codec.name}: size ${userSize} is smaller than the struct's ${codec.size} bytes`,
    );
  }
  for (let at = codec.size; at < userSize; at++) {
    if (at >= buffer.length) {
      throw new KernelError(
        'EFAULT',
        `${codec.name}: size ${userSize} runs past the ${buffer.length}-byte user buffer`,
      );
    }
    if (buffer[at] !== 0) {
      throw new KernelError(
        'E2BIG',
        `${codec.name}: size ${userSize} is larger than the struct's ${codec.size} bytes and byte ${at} is not zero`,
      );
    }
  }
  if (buffer.length < codec.size) {
    throw new KernelError(
      'EFAULT',
      `${codec.name}: the ${buffer.length}-byte user buffer is shorter than size ${userSize}`,
    );
  }
  return codec.decode(buffer);
}

/**
 * Write an ioctl's output back to userspace (`luo_ucmd_respond()`): `value` encoded, its first
 * min(user's `size`, `codec.size`) bytes copied over the start of `arg`.
 *
 * @throws KernelError `EFAULT` when `arg` cannot hold those bytes
 */
export function copyStructToUser<T>(codec: StructCodec<T>, arg: Uint8Array, value: T): void {
  const length = Math.min(getUserSize(codec, arg).userSize, codec.size);
  if (length > arg.length) {
    throw new KernelError(
      'EFAULT',
      `${codec.name}: ${length} bytes of output do not fit the ${arg.length}-byte user buffer`,
    );
  }
  arg.set(codec.encode(value).subarray(0, length));
}

/** `get_user(size)`: the struct's leading `__u32 size`, or `EFAULT` when it cannot be read. */
function getUserSize(
  codec: StructCodec<unknown>,
  arg: Uint8Array | null,
): { buffer: Uint8Array; userSize: number } {
  if (arg === null || arg.length < 4) {
    throw new KernelError('EFAULT', `${codec.name}: cannot read the size field of the argument`);
  }
  return {
    buffer: arg,
    userSize: new DataView(arg.buffer, arg.byteOffset, 4).getUint32(0, true),
  };
}
