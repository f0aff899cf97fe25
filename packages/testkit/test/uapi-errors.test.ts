// The error table of spec/luo-upstream.md §5 for /dev/liveupdate, session fds and reboot, as G2
// behaves over the G1 ABI: one test (or it.each case) per row.
import { describe, expect, it } from 'vitest';
import {
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  createSessionArg,
  getNameArg,
  preserveFdArg,
  retrieveSessionArg,
} from '@liveupdate/core';
import { ERRNO, O_RDWR, type Process } from '@liveupdate/machine';
import { liveUpdateImage } from '@liveupdate/testkit';
import {
  CLAIMS_READS_MODULE,
  boot,
  createNote,
  fillFdTable,
  noteCalls,
  noteControl,
  openDevice,
  preserveNote,
  readNote,
} from './helpers.js';

const utf8 = new TextEncoder();

/** `_IOC(dir, 0xBA, nr, size)`: a LUO command number with direction and size bits set. */
function ioc(dir: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (0xba << 8) | nr) >>> 0;
}

/** A `liveupdate_ioctl_create_session` buffer of `length` bytes, with `size` and raw `name`. */
function createArg(name: Uint8Array, size = createSessionArg.size, length = size): Uint8Array {
  const arg = new Uint8Array(Math.max(length, createSessionArg.size));
  createSessionArg.encodeInto(arg, 0, { size, fd: -1, name });
  return arg;
}

/** A `liveupdate_session_preserve_fd` buffer. */
function preserveArg(fd: number, token: bigint, size = preserveFdArg.size): Uint8Array {
  return preserveFdArg.encode({ size, fd, token });
}

/** A session created on a fresh device, and the device's fd. */
async function outgoingSession(process: Process, name = 's') {
  const device = await openDevice(process);
  return { device, session: await device.createSession(name) };
}

describe('open(/dev/liveupdate)', () => {
  it('is EBUSY while the device is open, even in the same process, and works again after close', async () => {
    const harness = await boot();
    const device = await openDevice(harness.process);
    await expect(openDevice(harness.process)).rejects.toMatchObject({ code: 'EBUSY' });
    await expect(openDevice(harness.machine.spawn())).rejects.toMatchObject({ code: 'EBUSY' });
    await device.close();
    await expect(openDevice(harness.process)).resolves.toBeDefined();
  });

  it.each(['liveupdate=off', 'kho=off'])('is ENOENT when LUO is disabled (%s)', async (cmdline) => {
    const { process } = await boot({ cmdline });
    await expect(openDevice(process)).rejects.toMatchObject({
      code: 'ENOENT',
      errno: ERRNO.ENOENT,
    });
  });

  it('is EIO on every try once the incoming sessions failed to deserialize', async () => {
    const harness = await boot();
    const { session } = await outgoingSession(harness.process);
    await preserveNote(session, 1, 'orphan');
    // The next kernel claims note-v1 but has no handler for it: deserialization fails at the first
    // open.
    const next = await harness.liveUpdate(
      liveUpdateImage({ version: '6.18.1', modules: [CLAIMS_READS_MODULE] }),
    );
    await expect(openDevice(next)).rejects.toMatchObject({ code: 'EIO' });
    await expect(openDevice(next)).rejects.toMatchObject({ code: 'EIO' });
    await expect(openDevice(harness.machine.spawn())).rejects.toMatchObject({ code: 'EIO' });
  });
});

describe('any ioctl', () => {
  it.each([
    ['/dev/liveupdate', 'nr 0x02, past RETRIEVE_SESSION', 0xba02],
    ['/dev/liveupdate', 'nr 0x40, a session command', 0xba40],
    ['a session fd', 'nr 0x44, past GET_NAME', 0xba44],
    ['a session fd', 'nr 0x00, below the session commands', 0xba00],
  ] as const)('on %s is EINVAL for a command number out of range: %s', async (on, _what, cmd) => {
    const { process } = await boot();
    const { device, session } = await outgoingSession(process);
    const fd = on === '/dev/liveupdate' ? device.fd : session.fd;
    await expect(process.ioctl(fd, cmd, createArg(utf8.encode('x')))).rejects.toMatchObject({
      code: 'EINVAL',
    });
  });

  it.each([
    ['/dev/liveupdate', 'CREATE_SESSION with _IOWR bits and size 72', ioc(3, 0x00, 72)],
    ['/dev/liveupdate', 'RETRIEVE_SESSION with another type byte', 0xbb01],
    ['a session fd', 'GET_NAME with _IOR bits and size 72', ioc(2, 0x43, 72)],
  ] as const)('on %s is ENOTTY when the command bits differ: %s', async (on, _what, cmd) => {
    const { process } = await boot();
    const { device, session } = await outgoingSession(process);
    const fd = on === '/dev/liveupdate' ? device.fd : session.fd;
    await expect(process.ioctl(fd, cmd, createArg(utf8.encode('x')))).rejects.toMatchObject({
      code: 'ENOTTY',
    });
  });

  it('is EINVAL when size is smaller than the struct, and creates nothing', async () => {
    const { process } = await boot();
    const { device, session } = await outgoingSession(process);
    const short = createArg(utf8.encode('vm0'), createSessionArg.size - 1, createSessionArg.size);
    await expect(
      process.ioctl(device.fd, LIVEUPDATE_IOCTL_CREATE_SESSION, short),
    ).rejects.toMatchObject({ code: 'EINVAL' });
    const note = await createNote(process, 'n');
    await expect(
      process.ioctl(session.fd, LIVEUPDATE_SESSION_PRESERVE_FD, preserveArg(note, 1n, 15)),
    ).rejects.toMatchObject({ code: 'EINVAL' });
    // Neither call changed anything: the name is free and the token unused.
    await expect(device.createSession('vm0')).resolves.toBeDefined();
    await expect(session.preserveFd(note, 1n)).resolves.toBeUndefined();
  });

  it('is EFAULT when the size field cannot be read, or size runs past the buffer', async () => {
    const { process } = await boot();
    const { device, session } = await outgoingSession(process);
    await expect(process.ioctl(device.fd, LIVEUPDATE_IOCTL_CREATE_SESSION)).rejects.toMatchObject({
      code: 'EFAULT',
    });
    await expect(
      process.ioctl(session.fd, LIVEUPDATE_SESSION_PRESERVE_FD, new Uint8Array(2)),
    ).rejects.toMatchObject({ code: 'EFAULT' });
    const past = createArg(utf8.encode('vm0'), 80, createSessionArg.size);
    await expect(
      process.ioctl(device.fd, LIVEUPDATE_IOCTL_CREATE_SESSION, past),
    ).rejects.toMatchObject({ code: 'EFAULT' });
  });

  it('is E2BIG when size is larger than the struct and the extra bytes are not zero', async () => {
    const { process } = await boot();
    const { device } = await outgoingSession(process);
    const arg = createArg(utf8.encode('vm0'), 80);
    arg[79] = 1;
    await expect(
      process.ioctl(device.fd, LIVEUPDATE_IOCTL_CREATE_SESSION, arg),
    ).rejects.toMatchObject({ code: 'E2BIG' });
    await expect(device.createSession('vm0')).resolves.toBeDefined();
  });

  it('accepts a larger struct whose extra bytes are zero, writing back only the struct', async () => {
    const { process } = await boot();
    const { device } = await outgoingSession(process);
    const arg = createArg(utf8.encode('vm0'), 80);
    await process.ioctl(device.fd, LIVEUPDATE_IOCTL_CREATE_SESSION, arg);
    const { fd } = createSessionArg.decode(arg);
    expect(fd).toBeGreaterThan(device.fd);
    expect([...arg.subarray(72)]).toEqual(new Array(8).fill(0));
  });
});

describe("any ioctl, upstream's order of checks", () => {
  /** A user buffer of `length` bytes whose leading `size` field says `size`; the rest zero. */
  const sized = (size: number, length: number): Uint8Array => {
    const arg = new Uint8Array(length);
    new DataView(arg.buffer).setUint32(0, size, true);
    return arg;
  };
  const bigTail = (): Uint8Array => {
    const arg = sized(24, 24);
    arg[20] = 1;
    return arg;
  };
  const RETRIEVE_FD = 0xba41;
  const PRESERVE_FD_IOWR = ioc(3, 0x40, 16);
  const CREATE_IOWR = ioc(3, 0x00, 72);
  // [fd, what, cmd, arg, errno]: each row pits two checks against each other; the earlier wins.
  const cases: [
    'device' | 'outgoing session',
    string,
    number,
    () => Uint8Array | undefined,
    string,
  ][] = [
    ['device', 'nr out of range before a missing arg', 0xba02, () => undefined, 'EINVAL'],
    [
      'outgoing session',
      'nr out of range before a short arg',
      0xba44,
      () => new Uint8Array(2),
      'EINVAL',
    ],
    ['device', 'a missing arg before wrong bits', CREATE_IOWR, () => undefined, 'EFAULT'],
    ['device', 'a short arg before another type byte', 0xbb01, () => new Uint8Array(3), 'EFAULT'],
    [
      'outgoing session',
      'a missing arg before wrong bits',
      PRESERVE_FD_IOWR,
      () => undefined,
      'EFAULT',
    ],
    [
      'outgoing session',
      'a missing arg before the direction',
      RETRIEVE_FD,
      () => undefined,
      'EFAULT',
    ],
    [
      'outgoing session',
      'a short arg before the direction',
      0xba42,
      () => new Uint8Array(2),
      'EFAULT',
    ],
    [
      'device',
      'wrong bits before a size below min_size',
      CREATE_IOWR,
      () => sized(8, 72),
      'ENOTTY',
    ],
    ['outgoing session', 'wrong bits before a non-zero tail', PRESERVE_FD_IOWR, bigTail, 'ENOTTY'],
    [
      'outgoing session',
      'the direction before a size below min_size',
      RETRIEVE_FD,
      () => sized(8, 16),
      'EINVAL',
    ],
    ['outgoing session', 'the direction before a non-zero tail', RETRIEVE_FD, bigTail, 'EINVAL'],
    [
      'outgoing session',
      'the direction before a size past the buffer',
      RETRIEVE_FD,
      () => sized(64, 16),
      'EINVAL',
    ],
    [
      'outgoing session',
      'min_size before a size past the buffer',
      0xba40,
      () => sized(8, 4),
      'EINVAL',
    ],
    [
      'outgoing session',
      'a non-zero tail byte before the end of the buffer',
      0xba40,
      () => {
        const arg = sized(32, 24);
        arg[20] = 1;
        return arg;
      },
      'E2BIG',
    ],
    [
      'outgoing session',
      'the end of the buffer before a zero tail ends',
      0xba40,
      () => sized(32, 24),
      'EFAULT',
    ],
  ];

  it.each(cases)('on the %s: %s', async (on, _what, cmd, arg, errno) => {
    const { process } = await boot();
    const { device, session } = await outgoingSession(process);
    const fd = on === 'device' ? device.fd : session.fd;
    await expect(process.ioctl(fd, cmd, arg())).rejects.toMatchObject({ code: errno });
  });
});

describe('CREATE_SESSION', () => {
  it('is EINVAL for an empty name', async () => {
    const { process } = await boot();
    const device = await openDevice(process);
    await expect(
      process.ioctl(device.fd, LIVEUPDATE_IOCTL_CREATE_SESSION, createArg(new Uint8Array(0))),
    ).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('is EINVAL for a name with no NUL in its 64 bytes, and accepts 63 bytes', async () => {
    const { process } = await boot();
    const device = await openDevice(process);
    await expect(
      process.ioctl(
        device.fd,
        LIVEUPDATE_IOCTL_CREATE_SESSION,
        createArg(utf8.encode('n'.repeat(64))),
      ),
    ).rejects.toMatchObject({ code: 'EINVAL' });
    const session = await device.createSession('n'.repeat(63));
    await expect(session.getName()).resolves.toBe('n'.repeat(63));
  });

  it('takes a name as bytes: any but NUL, compared byte for byte, handed over and returned unchanged', async () => {
    const harness = await boot();
    const device = await openDevice(harness.process);
    // Neither is UTF-8, and both decode to the same U+FFFD: only their bytes tell them apart.
    const a = new Uint8Array([0xff, 0x01, 0x80, 0x5c]);
    const b = new Uint8Array([0xfe, 0x01, 0x80, 0x5c]);
    const sessionA = await device.createSession(a);
    await device.createSession(b);
    expect(sessionA.name).toBe(new TextDecoder().decode(b));
    await expect(device.createSession(a.slice())).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(sessionA.getNameBytes()).resolves.toEqual(a);
    await preserveNote(sessionA, 1, 'under a byte name');
    const next = await openDevice(await harness.liveUpdate());
    const incoming = await next.retrieveSession(a);
    await expect(incoming.getNameBytes()).resolves.toEqual(a);
    expect(await readNote(next.process, await incoming.retrieveFd(1n))).toBe('under a byte name');
    await expect((await next.retrieveSession(b)).getNameBytes()).resolves.toEqual(b);
  });

  it('is EEXIST for the name of an open outgoing session, which close frees', async () => {
    const { process } = await boot();
    const { device, session } = await outgoingSession(process, 'vm0');
    await expect(device.createSession('vm0')).rejects.toMatchObject({ code: 'EEXIST' });
    await session.close();
    await expect(device.createSession('vm0')).resolves.toBeDefined();
  });

  it('is EMFILE when the process has no free fd, and creates nothing', async () => {
    const { process } = await boot();
    const device = await openDevice(process);
    const spare = await fillFdTable(process);
    await expect(device.createSession('vm0')).rejects.toMatchObject({ code: 'EMFILE' });
    await process.close(spare);
    await expect(device.createSession('vm0')).resolves.toBeDefined();
  });

  it('is ENOSPC past liveupdate.max_sessions outgoing sessions', async () => {
    const { process } = await boot({ cmdline: 'liveupdate.max_sessions=2' });
    const device = await openDevice(process);
    const first = await device.createSession('a');
    await device.createSession('b');
    await expect(device.createSession('c')).rejects.toMatchObject({ code: 'ENOSPC' });
    await first.close();
    await expect(device.createSession('c')).resolves.toBeDefined();
  });
});

describe('RETRIEVE_SESSION', () => {
  it('is ENOENT after a cold boot, and for a name the previous kernel did not hand over', async () => {
    const harness = await boot();
    const device = await openDevice(harness.process);
    await expect(device.retrieveSession('vm0')).rejects.toMatchObject({ code: 'ENOENT' });
    await device.createSession('vm0');
    const next = await harness.liveUpdate();
    const incoming = await openDevice(next);
    await expect(incoming.retrieveSession('vm1')).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(incoming.retrieveSession('vm0')).resolves.toBeDefined();
  });

  it('is EINVAL for a session already retrieved', async () => {
    const harness = await boot();
    await (await openDevice(harness.process)).createSession('vm0');
    const device = await openDevice(await harness.liveUpdate());
    await device.retrieveSession('vm0');
    const arg = retrieveSessionArg.encode({
      size: retrieveSessionArg.size,
      fd: -1,
      name: utf8.encode('vm0'),
    });
    await expect(
      harness.process.ioctl(device.fd, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, arg),
    ).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

describe('PRESERVE_FD', () => {
  it('is EINVAL on an incoming session', async () => {
    const harness = await boot();
    await (await openDevice(harness.process)).createSession('vm0');
    const next = await harness.liveUpdate();
    const incoming = await (await openDevice(next)).retrieveSession('vm0');
    await expect(incoming.preserveFd(await createNote(next, 'late'), 1n)).rejects.toMatchObject({
      code: 'EINVAL',
    });
  });

  it('is EEXIST for a token already used in the session, but not for one used in another', async () => {
    const { process } = await boot();
    const { device, session } = await outgoingSession(process);
    await preserveNote(session, 7, 'first');
    await expect(session.preserveFd(await createNote(process, 'second'), 7n)).rejects.toMatchObject(
      { code: 'EEXIST' },
    );
    const other = await device.createSession('other');
    await expect(other.preserveFd(await createNote(process, 'third'), 7n)).resolves.toBeUndefined();
  });

  it('is ENOSPC past liveupdate.max_files files, after the token check and before the fd lookup', async () => {
    const { process } = await boot({ cmdline: 'liveupdate.max_files=1' });
    const { session } = await outgoingSession(process);
    await preserveNote(session, 1, 'only');
    const note = await createNote(process, 'one too many');
    await expect(session.preserveFd(note, 2n)).rejects.toMatchObject({ code: 'ENOSPC' });
    await expect(session.preserveFd(note, 1n)).rejects.toMatchObject({ code: 'EEXIST' });
    await process.close(note);
    await expect(session.preserveFd(note, 2n)).rejects.toMatchObject({ code: 'ENOSPC' });
  });

  it('is EBADF for an fd that is not open', async () => {
    const { process } = await boot();
    const { session } = await outgoingSession(process);
    const note = await createNote(process, 'closed');
    await process.close(note);
    await expect(session.preserveFd(note, 1n)).rejects.toMatchObject({ code: 'EBADF' });
  });

  it('is ENOENT for a file no handler can preserve, such as /dev/null', async () => {
    const { process } = await boot();
    const { session } = await outgoingSession(process);
    const devNull = await process.open('/dev/null', O_RDWR);
    await expect(session.preserveFd(devNull, 1n)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('is EBUSY for a file already preserved in another session', async () => {
    const { process } = await boot();
    const { device, session } = await outgoingSession(process);
    const note = await createNote(process, 'shared');
    await session.preserveFd(note, 1n);
    const other = await device.createSession('other');
    await expect(other.preserveFd(note, 1n)).rejects.toMatchObject({ code: 'EBUSY' });
    // Once the first session let go of it, the file can be preserved again.
    await session.close();
    await expect(other.preserveFd(note, 1n)).resolves.toBeUndefined();
  });

  it('is EBUSY for a dup of a file already preserved in the same session', async () => {
    const { process } = await boot();
    const { session } = await outgoingSession(process);
    const note = await createNote(process, 'dup');
    await session.preserveFd(note, 1n);
    await expect(session.preserveFd(await process.dup(note), 2n)).rejects.toMatchObject({
      code: 'EBUSY',
    });
  });

  it('is EBUSY for a retrieved file whose incoming session is not finished yet', async () => {
    const harness = await boot();
    const { session } = await outgoingSession(harness.process, 'old');
    await preserveNote(session, 1, 'carried');
    const next = await harness.liveUpdate();
    const device = await openDevice(next);
    const incoming = await device.retrieveSession('old');
    const fd = await incoming.retrieveFd(1n);
    const outgoing = await device.createSession('new');
    await expect(outgoing.preserveFd(fd, 1n)).rejects.toMatchObject({ code: 'EBUSY' });
    await incoming.finish();
    await expect(outgoing.preserveFd(fd, 1n)).resolves.toBeUndefined();
  });
});

describe('RETRIEVE_FD', () => {
  it('is EINVAL on an outgoing session', async () => {
    const { process } = await boot();
    const { session } = await outgoingSession(process);
    await preserveNote(session, 1, 'mine');
    await expect(session.retrieveFd(1n)).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('is ENOENT for a token the session does not have, and for every token after FINISH', async () => {
    const harness = await boot();
    const { session } = await outgoingSession(harness.process);
    await preserveNote(session, 1, 'one');
    const next = await harness.liveUpdate();
    const incoming = await (await openDevice(next)).retrieveSession('s');
    await expect(incoming.retrieveFd(2n)).rejects.toMatchObject({ code: 'ENOENT' });
    await incoming.finish();
    await expect(incoming.retrieveFd(1n)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('is EMFILE when the process has no free fd, before the handler retrieves anything', async () => {
    const harness = await boot();
    const { session } = await outgoingSession(harness.process);
    await preserveNote(session, 1, 'waiting');
    const next = await harness.liveUpdate();
    const incoming = await (await openDevice(next)).retrieveSession('s');
    const spare = await fillFdTable(next);
    await expect(incoming.retrieveFd(1n)).rejects.toMatchObject({ code: 'EMFILE' });
    // Upstream takes the fd first (get_unused_fd_flags), so the file is still unretrieved.
    expect(await noteCalls(next)).toEqual([]);
    await next.close(spare);
    expect(await readNote(next, await incoming.retrieveFd(1n))).toBe('waiting');
  });

  it("gives the handler's failure, and the same failure again without calling retrieve twice", async () => {
    const harness = await boot();
    const { session } = await outgoingSession(harness.process);
    await preserveNote(session, 1, 'fragile');
    const next = await harness.liveUpdate();
    const incoming = await (await openDevice(next)).retrieveSession('s');
    await noteControl(next, { throwPlain: 'retrieve' });
    await expect(incoming.retrieveFd(1n)).rejects.toMatchObject({ code: 'EIO' });
    const calls = await noteControl(next, { throwPlain: null });
    await expect(incoming.retrieveFd(1n)).rejects.toMatchObject({ code: 'EIO' });
    calls.push(...(await noteCalls(next)));
    expect(calls).toEqual(['retrieve fragile']);
  });
});

describe('FINISH', () => {
  it('is EINVAL on an outgoing session', async () => {
    const { process } = await boot();
    const { session } = await outgoingSession(process);
    await preserveNote(session, 1, 'live');
    await noteCalls(process);
    await expect(session.finish()).rejects.toMatchObject({ code: 'EINVAL' });
    expect(await noteCalls(process)).toEqual([]);
  });

  it('is EBUSY when a canFinish says no, and changes nothing', async () => {
    const harness = await boot();
    const { session } = await outgoingSession(harness.process);
    await preserveNote(session, 1, 'a');
    await preserveNote(session, 2, 'b');
    const next = await harness.liveUpdate();
    const incoming = await (await openDevice(next)).retrieveSession('s');
    const a = await incoming.retrieveFd(1n);
    await noteControl(next, { refuseFinish: true });
    await expect(incoming.finish()).rejects.toMatchObject({ code: 'EBUSY' });
    expect(await noteCalls(next)).toEqual(['canFinish a']);
    // Both files are still there, and a retry succeeds once the handler agrees.
    expect(await readNote(next, await incoming.retrieveFd(2n))).toBe('b');
    await noteControl(next, { refuseFinish: false });
    await incoming.finish();
    expect(await noteCalls(next)).toEqual(['canFinish a', 'canFinish b', 'finish b', 'finish a']);
    expect(await readNote(next, a)).toBe('a');
  });
});

describe('GET_NAME', () => {
  it('is EINVAL when reserved is not zero', async () => {
    const { process } = await boot();
    const { session } = await outgoingSession(process, 'vm0');
    const arg = getNameArg.encode({ size: getNameArg.size, reserved: 1, name: new Uint8Array(0) });
    await expect(process.ioctl(session.fd, LIVEUPDATE_SESSION_GET_NAME, arg)).rejects.toMatchObject(
      { code: 'EINVAL' },
    );
    await expect(session.getName()).resolves.toBe('vm0');
  });
});

describe('reboot(LINUX_REBOOT_CMD_KEXEC)', () => {
  it("returns the errno of the handler's failed freeze", async () => {
    const harness = await boot();
    const { session } = await outgoingSession(harness.process);
    await preserveNote(session, 1, 'stuck');
    await noteControl(harness.process, { failFreeze: 'stuck' });
    await expect(harness.liveUpdate()).rejects.toMatchObject({
      code: 'EAGAIN',
      errno: ERRNO.EAGAIN,
    });
    expect(harness.machine.bootCount).toBe(1);
  });
});
