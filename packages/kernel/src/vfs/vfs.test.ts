import 'reflect-metadata';
import { describe, expect, it } from 'vitest';
import {
  KernelError,
  O_ACCMODE,
  O_APPEND,
  O_CLOEXEC,
  O_CREAT,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
} from '@liveupdate/machine';
import { KernelLog, LOGLEVEL } from '../kernel-log.js';
import { KernelProcess } from '../process-table.js';
import { File, type FileOperations, type SyscallContext } from './file.js';
import { Vfs } from './vfs.js';
import { errnoOf } from '../../test/errno-of.js';

interface LogLine {
  level: number;
  text: string;
}

function setup(): { vfs: Vfs; log: LogLine[]; ctx: SyscallContext } {
  const log: LogLine[] = [];
  const kernelLog = new KernelLog((message) => {
    if (message.type === 'log') log.push({ level: message.level, text: message.text });
  }, KernelLog.now());
  return { vfs: new Vfs(kernelLog), log, ctx: { process: new KernelProcess(1) } };
}

/** fops that count their `release` calls. */
function counting(extra: FileOperations = {}): { fops: FileOperations; released: File[] } {
  const released: File[] = [];
  return {
    released,
    fops: {
      ...extra,
      release(file) {
        released.push(file);
        return extra.release?.(file);
      },
    },
  };
}

describe('Vfs', () => {
  describe('char devices', () => {
    it('opens a registered device as a new file with one reference, calling its open op', async () => {
      const { vfs, ctx } = setup();
      const opened: [File, SyscallContext][] = [];
      const fops: FileOperations = {
        open(file, context) {
          opened.push([file, context]);
        },
      };
      vfs.registerCharDevice('/dev/liveupdate', fops);
      const file = await vfs.open('/dev/liveupdate', O_RDWR, ctx);
      expect(file.path).toBe('/dev/liveupdate');
      expect(file.fops).toBe(fops);
      expect(file.flags).toBe(O_RDWR);
      expect(file.refcount).toBe(1);
      expect(opened).toEqual([[file, ctx]]);
      const other = await vfs.open('/dev/liveupdate', O_RDONLY, ctx);
      expect(other).not.toBe(file);
    });

    it('refuses a path that is already registered with EEXIST', () => {
      const { vfs } = setup();
      vfs.registerCharDevice('/dev/null', {});
      expect(errnoOf(() => vfs.registerCharDevice('/dev/null', {}))).toBe('EEXIST');
    });

    it.each([
      'null',
      '/dev/',
      '/etc/passwd',
      '/dev/a b',
      '/dev/' + 'x'.repeat(201),
      'dev/null',
      '',
    ])('refuses to register the path %j with EINVAL', (path) => {
      const { vfs } = setup();
      expect(errnoOf(() => vfs.registerCharDevice(path, {}))).toBe('EINVAL');
    });

    it('refuses a path that is not a string with EINVAL', () => {
      const { vfs } = setup();
      expect(errnoOf(() => vfs.registerCharDevice(42 as unknown as string, {}))).toBe('EINVAL');
    });

    it('accepts nested device paths up to 200 characters after /dev/', async () => {
      const { vfs, ctx } = setup();
      const path = '/dev/vfio/devices/' + 'v'.repeat(200 - 'vfio/devices/'.length);
      vfs.registerCharDevice(path, {});
      expect((await vfs.open(path, O_RDWR, ctx)).path).toBe(path);
    });

    it('fails to open an unknown or unregistered device with ENOENT, while open files keep working', async () => {
      const { vfs, ctx } = setup();
      await expect(vfs.open('/dev/nothing', O_RDWR, ctx)).rejects.toMatchObject({ code: 'ENOENT' });
      const { fops, released } = counting();
      vfs.registerCharDevice('/dev/gone', fops);
      const file = await vfs.open('/dev/gone', O_RDWR, ctx);
      vfs.unregisterCharDevice('/dev/gone');
      await expect(vfs.open('/dev/gone', O_RDWR, ctx)).rejects.toMatchObject({ code: 'ENOENT' });
      expect(errnoOf(() => vfs.unregisterCharDevice('/dev/gone'))).toBe('ENOENT');
      await vfs.fput(file);
      expect(released).toEqual([file]);
    });

    it('refuses the access mode O_ACCMODE with EINVAL', async () => {
      const { vfs, ctx } = setup();
      vfs.registerCharDevice('/dev/null', {});
      await expect(vfs.open('/dev/null', O_ACCMODE, ctx)).rejects.toMatchObject({ code: 'EINVAL' });
    });

    it('lets only one file of an exclusive device exist, until its last reference is dropped', async () => {
      const { vfs, ctx } = setup();
      vfs.registerCharDevice('/dev/liveupdate', {}, { exclusive: true });
      const file = await vfs.open('/dev/liveupdate', O_RDWR, ctx);
      await expect(vfs.open('/dev/liveupdate', O_RDWR, ctx)).rejects.toMatchObject({
        code: 'EBUSY',
        errno: 16,
      });
      vfs.fget(file);
      await vfs.fput(file);
      await expect(vfs.open('/dev/liveupdate', O_RDWR, ctx)).rejects.toMatchObject({
        code: 'EBUSY',
      });
      await vfs.fput(file);
      const again = await vfs.open('/dev/liveupdate', O_RDWR, ctx);
      expect(again).not.toBe(file);
    });

    it('refuses a second concurrent open of an exclusive device while the first is still in its open op', async () => {
      const { vfs, ctx } = setup();
      let finish: () => void = () => {};
      vfs.registerCharDevice(
        '/dev/slow',
        { open: () => new Promise<void>((resolve) => (finish = resolve)) },
        { exclusive: true },
      );
      const first = vfs.open('/dev/slow', O_RDWR, ctx);
      await expect(vfs.open('/dev/slow', O_RDWR, ctx)).rejects.toMatchObject({ code: 'EBUSY' });
      finish();
      expect((await first).refcount).toBe(1);
    });

    it('keeps no file when the open op fails, so an exclusive device stays free', async () => {
      const { vfs, ctx } = setup();
      let fail = true;
      vfs.registerCharDevice(
        '/dev/picky',
        {
          open() {
            if (fail) throw new KernelError('EPERM', 'not now');
          },
        },
        { exclusive: true },
      );
      await expect(vfs.open('/dev/picky', O_RDWR, ctx)).rejects.toMatchObject({ code: 'EPERM' });
      fail = false;
      const file = await vfs.open('/dev/picky', O_RDWR, ctx);
      expect(file.refcount).toBe(1);
    });

    it('lets a non-exclusive device be opened many times', async () => {
      const { vfs, ctx } = setup();
      vfs.registerCharDevice('/dev/null', {});
      const files = await Promise.all([1, 2, 3].map(() => vfs.open('/dev/null', O_RDWR, ctx)));
      expect(new Set(files).size).toBe(3);
    });
  });

  describe('reopening a char device file (a LUO handler rebuilding it)', () => {
    it('makes the file open would make, with the given flags and private data, without the open op', () => {
      const { vfs } = setup();
      const { fops, released } = counting({
        open() {
          throw new KernelError('EPERM', 'the open op must not run');
        },
      });
      vfs.registerCharDevice('/dev/kvs', fops);
      const table = { entries: 3 };
      const file = vfs.reopenCharDevice('/dev/kvs', O_RDONLY | O_NONBLOCK, table);
      expect(file.path).toBe('/dev/kvs');
      expect(file.fops).toBe(fops);
      expect(file.flags).toBe(O_RDONLY | O_NONBLOCK);
      expect([file.readable, file.writable]).toEqual([true, false]);
      expect(file.privateData).toBe(table);
      expect(file.refcount).toBe(1);
      expect(vfs.openFiles).toBe(1);
      const appending = vfs.reopenCharDevice('/dev/kvs', O_WRONLY | O_APPEND, table);
      expect([appending.flags, appending.readable, appending.writable]).toEqual([
        O_WRONLY | O_APPEND,
        false,
        true,
      ]);
      expect(released).toEqual([]);
    });

    it('counts the file against an exclusive device until its final fput', async () => {
      const { vfs, ctx } = setup();
      vfs.registerCharDevice('/dev/once', {}, { exclusive: true });
      const file = vfs.reopenCharDevice('/dev/once', O_RDWR, null);
      await expect(vfs.open('/dev/once', O_RDWR, ctx)).rejects.toMatchObject({ code: 'EBUSY' });
      expect(errnoOf(() => vfs.reopenCharDevice('/dev/once', O_RDWR, null))).toBe('EBUSY');
      await vfs.fput(file);
      expect(vfs.openFiles).toBe(0);
      expect((await vfs.open('/dev/once', O_RDWR, ctx)).path).toBe('/dev/once');
    });

    it.each<[string, string, number, RegExp]>([
      ['a path outside /dev', 'kvs', O_RDWR, /path "kvs" must be \/dev\/<name>/],
      [
        'the access mode O_ACCMODE',
        '/dev/kvs',
        O_ACCMODE,
        /flags 0o3 of \/dev\/kvs have the access mode O_ACCMODE/,
      ],
      [
        'the fd flag O_CLOEXEC',
        '/dev/kvs',
        O_RDWR | O_CLOEXEC,
        /flags 0o2000002 of \/dev\/kvs hold bits a file does not keep/,
      ],
      [
        'the open-time flag O_CREAT',
        '/dev/kvs',
        O_RDONLY | O_CREAT,
        /flags 0o100 of \/dev\/kvs hold bits/,
      ],
      ['negative flags', '/dev/kvs', -1, /flags -1 of \/dev\/kvs/],
      ['fractional flags', '/dev/kvs', 1.5, /flags 1.5 of \/dev\/kvs/],
    ])('refuses %s with EINVAL naming it, making no file', (_what, path, flags, message) => {
      const { vfs } = setup();
      vfs.registerCharDevice('/dev/kvs', {});
      expect(() => vfs.reopenCharDevice(path, flags, null)).toThrow(
        expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(message) }),
      );
      expect(vfs.openFiles).toBe(0);
    });

    it('refuses a device nobody registered with ENOENT', () => {
      const { vfs } = setup();
      expect(() => vfs.reopenCharDevice('/dev/kvs', O_RDWR, null)).toThrow(
        expect.objectContaining({ code: 'ENOENT', message: expect.stringContaining('/dev/kvs') }),
      );
    });
  });

  describe('references', () => {
    it('counts references and calls release exactly once, on the last fput', async () => {
      const { vfs } = setup();
      const { fops, released } = counting();
      const file = vfs.anonInodeGetFile('memfd', fops, { id: 1 });
      expect(vfs.fget(file)).toBe(file);
      vfs.fget(file);
      expect(file.refcount).toBe(3);
      await vfs.fput(file);
      await vfs.fput(file);
      expect(file.refcount).toBe(1);
      expect(released).toEqual([]);
      await vfs.fput(file);
      expect(file.refcount).toBe(0);
      expect(released).toEqual([file]);
    });

    it('refuses fget and fput after the final fput with EBADF and does not release again', async () => {
      const { vfs } = setup();
      const { fops, released } = counting();
      const file = vfs.anonInodeGetFile('memfd', fops, null);
      await vfs.fput(file);
      await expect(vfs.fput(file)).rejects.toMatchObject({ code: 'EBADF' });
      expect(errnoOf(() => vfs.fget(file))).toBe('EBADF');
      expect(released).toHaveLength(1);
      expect(file.refcount).toBe(0);
    });

    it('counts open files until their final fput, including files a subsystem made itself', async () => {
      const { vfs, ctx } = setup();
      vfs.registerCharDevice('/dev/null', {});
      const device = await vfs.open('/dev/null', O_RDWR, ctx);
      const anon = vfs.anonInodeGetFile('a', {}, null);
      // Like memfd's files: made with `new File`, seen first when installed.
      const own = new File('/memfd:x', {}, O_RDWR);
      expect(vfs.openFiles).toBe(2);
      vfs.installFd(ctx.process, own);
      vfs.fget(anon);
      expect(vfs.openFiles).toBe(3);
      await vfs.fput(anon);
      expect(vfs.openFiles).toBe(3);
      await Promise.all([vfs.fput(anon), vfs.fput(device), vfs.fput(own)]);
      expect(vfs.openFiles).toBe(0);
    });

    it('waits for an async release before fput resolves', async () => {
      const { vfs } = setup();
      let done = false;
      const file = vfs.anonInodeGetFile(
        'slow',
        {
          async release() {
            await new Promise((resolve) => setTimeout(resolve, 5));
            done = true;
          },
        },
        null,
      );
      await vfs.fput(file);
      expect(done).toBe(true);
    });

    it.each([
      ['a KernelError', () => new KernelError('EIO', 'disk on fire')],
      ['a plain Error', () => new Error('disk on fire')],
    ])(
      'only logs %s thrown by release, and still frees an exclusive device',
      async (_what, makeError) => {
        const { vfs, log, ctx } = setup();
        const { fops, released } = counting({
          release() {
            throw makeError();
          },
        });
        vfs.registerCharDevice('/dev/liveupdate', fops, { exclusive: true });
        const file = await vfs.open('/dev/liveupdate', O_RDWR, ctx);
        await expect(vfs.fput(file)).resolves.toBeUndefined();
        expect(released).toEqual([file]);
        const warnings = log.filter((line) => line.level === LOGLEVEL.warn);
        expect(warnings).toHaveLength(1);
        expect(warnings[0]!.text).toContain('/dev/liveupdate');
        expect(warnings[0]!.text).toContain('disk on fire');
        await expect(vfs.open('/dev/liveupdate', O_RDWR, ctx)).resolves.toBeDefined();
      },
    );
  });

  describe('socket nodes', () => {
    it('a socket node shares the path namespace with char devices: no path is made twice', () => {
      const { vfs } = setup();
      vfs.registerCharDevice('/dev/kvs', {});
      const socket = {};
      expect(errnoOf(() => vfs.mknodSocket('/dev/kvs', socket))).toBe('EADDRINUSE');
      vfs.mknodSocket('/run/a.sock', socket);
      expect(errnoOf(() => vfs.mknodSocket('/run/a.sock', {}))).toBe('EADDRINUSE');
      expect(vfs.lookupSocket('/run/a.sock')).toBe(socket);
      expect(vfs.lookupSocket('/dev/kvs')).toBe('device');
      expect(vfs.lookupSocket('/run/b.sock')).toBeUndefined();
    });

    it('open of a socket node is ENXIO; unlink removes socket nodes only', async () => {
      const { vfs, ctx } = setup();
      vfs.registerCharDevice('/dev/kvs', {});
      vfs.mknodSocket('/run/a.sock', {});
      await expect(vfs.open('/run/a.sock', O_RDWR, ctx)).rejects.toMatchObject({ code: 'ENXIO' });
      expect(errnoOf(() => vfs.unlink('/dev/kvs'))).toBe('EPERM');
      vfs.unlink('/run/a.sock');
      expect(vfs.lookupSocket('/run/a.sock')).toBeUndefined();
      expect(errnoOf(() => vfs.unlink('/run/a.sock'))).toBe('ENOENT');
      await expect(vfs.open('/run/a.sock', O_RDWR, ctx)).rejects.toMatchObject({ code: 'ENOENT' });
    });
  });

  describe('anonymous files and fds', () => {
    it('makes anon-inode files named after their kind, read-write unless told otherwise', () => {
      const { vfs } = setup();
      const data = { session: 'vm0' };
      const file = vfs.anonInodeGetFile('luo_session', {}, data);
      expect(file.path).toBe('anon_inode:[luo_session]');
      expect(file.privateData).toBe(data);
      expect(file.refcount).toBe(1);
      expect([file.readable, file.writable]).toEqual([true, true]);
      const readOnly = vfs.anonInodeGetFile('x', {}, null, O_RDONLY);
      expect([readOnly.readable, readOnly.writable]).toEqual([true, false]);
      const writeOnly = vfs.anonInodeGetFile('x', {}, null, O_WRONLY);
      expect([writeOnly.readable, writeOnly.writable]).toEqual([false, true]);
    });

    it('installs a file at the lowest free fd of the process with its close-on-exec flag', () => {
      const { vfs, ctx } = setup();
      const a = vfs.anonInodeGetFile('a', {}, null);
      const b = vfs.anonInodeGetFile('b', {}, null);
      expect(vfs.installFd(ctx.process, a)).toBe(0);
      expect(vfs.installFd(ctx.process, b, { cloexec: true })).toBe(1);
      expect(ctx.process.files.get(1)).toBe(b);
      expect(ctx.process.files.cloexec(0)).toBe(false);
      expect(ctx.process.files.cloexec(1)).toBe(true);
      // The fd takes over the caller's reference: no new one is taken.
      expect(b.refcount).toBe(1);
    });
  });
});
