import { describe, expect, it } from 'vitest';
import { KernelError } from '@liveupdate/machine';
import {
  LIVEUPDATE_CMD_BASE,
  LIVEUPDATE_CMD_SESSION_BASE,
  LIVEUPDATE_DEVICE_IOCTLS,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_IOCTL_TYPE,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_IOCTLS,
  LIVEUPDATE_SESSION_NAME_LENGTH,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  _IO,
  copyStructFromUser,
  copyStructToUser,
  createSessionArg,
  finishArg,
  getNameArg,
  ioctlIndex,
  preserveFdArg,
  retrieveFdArg,
  retrieveSessionArg,
} from './liveupdate-uapi.js';

/** The errno name `fn` throws (checking the message names `what`), or 'returned'. */
function errnoOf(fn: () => unknown, what?: string): string {
  try {
    fn();
  } catch (error) {
    if (!KernelError.isInstance(error)) throw error;
    if (what !== undefined) expect(error.message).toContain(what);
    return error.code;
  }
  return 'returned';
}

/** A user buffer of `length` bytes whose `size` field says `size`. */
function userBuffer(length: number, size: number): Uint8Array {
  const buffer = new Uint8Array(length);
  new DataView(buffer.buffer).setUint32(0, size, true);
  return buffer;
}

describe('liveupdate uAPI constants', () => {
  it('numbers the commands as _IO(0xba, nr), as spec §1.2 lists them', () => {
    expect(LIVEUPDATE_IOCTL_TYPE).toBe(0xba);
    expect(LIVEUPDATE_SESSION_NAME_LENGTH).toBe(64);
    expect(LIVEUPDATE_CMD_BASE).toBe(0x00);
    expect(LIVEUPDATE_CMD_SESSION_BASE).toBe(0x40);
    expect(_IO(0xba, 0x42)).toBe(0xba42);
    expect(LIVEUPDATE_IOCTL_CREATE_SESSION).toBe(0xba00);
    expect(LIVEUPDATE_IOCTL_RETRIEVE_SESSION).toBe(0xba01);
    expect(LIVEUPDATE_SESSION_PRESERVE_FD).toBe(0xba40);
    expect(LIVEUPDATE_SESSION_RETRIEVE_FD).toBe(0xba41);
    expect(LIVEUPDATE_SESSION_FINISH).toBe(0xba42);
    expect(LIVEUPDATE_SESSION_GET_NAME).toBe(0xba43);
  });
});

describe('ioctl argument structs', () => {
  // Sizes and offsets from spec §1.3 and §1.4.
  it.each([
    ['liveupdate_ioctl_create_session', createSessionArg, 72, { size: 0, fd: 4, name: 8 }],
    ['liveupdate_ioctl_retrieve_session', retrieveSessionArg, 72, { size: 0, fd: 4, name: 8 }],
    ['liveupdate_session_preserve_fd', preserveFdArg, 16, { size: 0, fd: 4, token: 8 }],
    ['liveupdate_session_retrieve_fd', retrieveFdArg, 16, { size: 0, fd: 4, token: 8 }],
    ['liveupdate_session_finish', finishArg, 8, { size: 0, reserved: 4 }],
    ['liveupdate_session_get_name', getNameArg, 72, { size: 0, reserved: 4, name: 8 }],
  ] as const)('struct %s has the documented size and offsets', (name, codec, size, offsets) => {
    expect(codec.name).toBe(name);
    expect(codec.size).toBe(size);
    expect(codec.offsets).toEqual(offsets);
  });

  it('lays out create_session as size, fd, then the raw name bytes', () => {
    const name = new Uint8Array(64).fill(0x61); // no NUL: left for the kernel to refuse
    const bytes = createSessionArg.encode({ size: 72, fd: -2, name });
    const view = new DataView(bytes.buffer);
    expect(view.getUint32(0, true)).toBe(72);
    expect(view.getInt32(4, true)).toBe(-2);
    expect(bytes.subarray(8, 72)).toEqual(name);
    expect(createSessionArg.decode(bytes)).toEqual({ size: 72, fd: -2, name });
  });

  it('zero-pads a short name and reads it back as 64 bytes', () => {
    const bytes = retrieveSessionArg.encode({
      size: 72,
      fd: 3,
      name: new Uint8Array([0x76, 0x6d, 0x30]),
    });
    const { name } = retrieveSessionArg.decode(bytes);
    expect(name.length).toBe(64);
    expect([...name.subarray(0, 4)]).toEqual([0x76, 0x6d, 0x30, 0]);
    expect(name.subarray(3).every((b) => b === 0)).toBe(true);
  });

  it('stores the token as a little-endian u64 at offset 8', () => {
    const token = 0x0102030405060708n;
    for (const codec of [preserveFdArg, retrieveFdArg]) {
      const bytes = codec.encode({ size: 16, fd: 7, token });
      expect([...bytes]).toEqual([16, 0, 0, 0, 7, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
      expect(codec.decode(bytes)).toEqual({ size: 16, fd: 7, token });
    }
  });

  it('round-trips finish and get_name', () => {
    expect(finishArg.decode(finishArg.encode({ size: 8, reserved: 5 }))).toEqual({
      size: 8,
      reserved: 5,
    });
    const name = new Uint8Array(64);
    name.set([0x78]);
    const bytes = getNameArg.encode({ size: 72, reserved: 1, name });
    expect(new DataView(bytes.buffer).getUint32(4, true)).toBe(1);
    expect(bytes[8]).toBe(0x78);
    expect(getNameArg.decode(bytes)).toEqual({ size: 72, reserved: 1, name });
  });
});

describe('ioctlIndex', () => {
  const device = LIVEUPDATE_DEVICE_IOCTLS;
  const session = LIVEUPDATE_SESSION_IOCTLS;
  const arg = userBuffer(72, 72);

  it('returns the slot of each known command', () => {
    expect(ioctlIndex(0xba00, arg, device, 0)).toBe(0);
    expect(ioctlIndex(0xba01, arg, device, 0)).toBe(1);
    expect(session.map(({ cmd }) => ioctlIndex(cmd, arg, session, 0x40))).toEqual([0, 1, 2, 3]);
  });

  it('refuses a command number outside the table with EINVAL, not ENOTTY', () => {
    expect(errnoOf(() => ioctlIndex(0xba02, arg, device, 0))).toBe('EINVAL');
    expect(errnoOf(() => ioctlIndex(0xba40, arg, device, 0))).toBe('EINVAL');
    expect(errnoOf(() => ioctlIndex(0xba44, arg, session, 0x40))).toBe('EINVAL');
    expect(errnoOf(() => ioctlIndex(0xba3f, arg, session, 0x40))).toBe('EINVAL');
    expect(errnoOf(() => ioctlIndex(0xba00, arg, session, 0x40))).toBe('EINVAL');
    // Another type byte with an out-of-range nr is still EINVAL: nr is checked first.
    expect(errnoOf(() => ioctlIndex(0xbb05, arg, device, 0))).toBe('EINVAL');
    // Before the size is read, too.
    expect(errnoOf(() => ioctlIndex(0xba02, null, device, 0))).toBe('EINVAL');
  });

  it('refuses another type byte, or direction or size bits, with ENOTTY', () => {
    expect(errnoOf(() => ioctlIndex(0xbb00, arg, device, 0))).toBe('ENOTTY');
    expect(errnoOf(() => ioctlIndex(0x40ba00, arg, device, 0))).toBe('ENOTTY');
    expect(errnoOf(() => ioctlIndex(0xc048ba00, arg, device, 0))).toBe('ENOTTY');
    expect(errnoOf(() => ioctlIndex(0x4010ba40, arg, session, 0x40))).toBe('ENOTTY');
  });

  it('reads the size field before it compares the command: EFAULT, naming the slot’s struct', () => {
    for (const missing of [null, new Uint8Array(3)]) {
      expect(errnoOf(() => ioctlIndex(0xbb00, missing, device, 0), 'create_session')).toBe(
        'EFAULT',
      );
      expect(errnoOf(() => ioctlIndex(0xba41, missing, session, 0x40), 'retrieve_fd')).toBe(
        'EFAULT',
      );
    }
  });
});

describe('copyStructFromUser', () => {
  it('decodes a struct whose size is exactly the kernel size', () => {
    const arg = preserveFdArg.encode({ size: 16, fd: 5, token: 99n });
    expect(copyStructFromUser(preserveFdArg, arg)).toEqual({ size: 16, fd: 5, token: 99n });
  });

  it('fails with EFAULT when the size field cannot be read', () => {
    const name = 'liveupdate_session_preserve_fd';
    expect(errnoOf(() => copyStructFromUser(preserveFdArg, null), name)).toBe('EFAULT');
    expect(errnoOf(() => copyStructFromUser(preserveFdArg, new Uint8Array(3)), name)).toBe(
      'EFAULT',
    );
  });

  it('fails with EINVAL when size is smaller than the struct', () => {
    const name = 'liveupdate_session_finish';
    expect(errnoOf(() => copyStructFromUser(finishArg, userBuffer(8, 7)), name)).toBe('EINVAL');
    expect(errnoOf(() => copyStructFromUser(finishArg, userBuffer(8, 0)), name)).toBe('EINVAL');
    // Checked before the copy, as min_size comes before copy_struct_from_user.
    expect(errnoOf(() => copyStructFromUser(preserveFdArg, userBuffer(4, 8)))).toBe('EINVAL');
  });

  it('fails with EFAULT when size runs past the user buffer', () => {
    const name = 'liveupdate_session_retrieve_fd';
    expect(errnoOf(() => copyStructFromUser(retrieveFdArg, userBuffer(8, 16)), name)).toBe(
      'EFAULT',
    );
    expect(errnoOf(() => copyStructFromUser(retrieveFdArg, userBuffer(16, 24)), name)).toBe(
      'EFAULT',
    );
    expect(errnoOf(() => copyStructFromUser(retrieveFdArg, userBuffer(16, 0xffffffff)))).toBe(
      'EFAULT',
    );
  });

  it('reads the extra bytes in order: a non-zero one before the end of the buffer is E2BIG', () => {
    const arg = userBuffer(20, 24);
    arg.set(preserveFdArg.encode({ size: 24, fd: 3, token: 1n }));
    expect(errnoOf(() => copyStructFromUser(preserveFdArg, arg))).toBe('EFAULT');
    arg[19] = 1;
    expect(errnoOf(() => copyStructFromUser(preserveFdArg, arg))).toBe('E2BIG');
  });

  it('accepts a larger struct whose extra bytes are zero', () => {
    const arg = userBuffer(24, 24);
    arg.set(preserveFdArg.encode({ size: 24, fd: 3, token: 1n }));
    expect(copyStructFromUser(preserveFdArg, arg)).toEqual({ size: 24, fd: 3, token: 1n });
  });

  it('fails with E2BIG when a larger struct has a non-zero extra byte', () => {
    const arg = userBuffer(24, 24);
    arg[23] = 1;
    expect(
      errnoOf(() => copyStructFromUser(preserveFdArg, arg), 'liveupdate_session_preserve_fd'),
    ).toBe('E2BIG');
    arg[23] = 0;
    arg[16] = 0x80;
    expect(errnoOf(() => copyStructFromUser(preserveFdArg, arg))).toBe('E2BIG');
  });

  it('ignores bytes of the buffer past size', () => {
    const arg = userBuffer(32, 16);
    arg[20] = 0xff;
    expect(copyStructFromUser(preserveFdArg, arg).size).toBe(16);
  });
});

describe('copyStructToUser', () => {
  it('writes the whole struct when the user struct is as large', () => {
    const arg = retrieveFdArg.encode({ size: 16, fd: 0, token: 4n });
    copyStructToUser(retrieveFdArg, arg, { size: 16, fd: 9, token: 4n });
    expect(retrieveFdArg.decode(arg)).toEqual({ size: 16, fd: 9, token: 4n });
  });

  it('leaves the extra bytes of a larger user struct alone', () => {
    const arg = userBuffer(24, 24);
    arg.fill(0xee, 16);
    copyStructToUser(retrieveFdArg, arg, { size: 24, fd: 9, token: 4n });
    expect(retrieveFdArg.decode(arg)).toEqual({ size: 24, fd: 9, token: 4n });
    expect(arg.subarray(16).every((b) => b === 0xee)).toBe(true);
  });

  it('writes no more than the user size', () => {
    const arg = userBuffer(16, 8);
    copyStructToUser(retrieveFdArg, arg, { size: 8, fd: 9, token: 4n });
    expect([...arg]).toEqual([8, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('fails with EFAULT when the buffer cannot hold the output', () => {
    expect(
      errnoOf(() => copyStructToUser(finishArg, new Uint8Array(2), { size: 8, reserved: 0 })),
    ).toBe('EFAULT');
    expect(
      errnoOf(() => copyStructToUser(finishArg, userBuffer(4, 8), { size: 8, reserved: 0 })),
    ).toBe('EFAULT');
  });
});
