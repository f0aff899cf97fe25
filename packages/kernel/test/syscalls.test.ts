import { describe, expect, it } from 'vitest';
import {
  FD_CLOEXEC,
  F_DUPFD,
  F_GETFD,
  F_SETFD,
  O_CLOEXEC,
  O_RDONLY,
  O_WRONLY,
  SEEK_END,
  SEEK_SET,
} from '@liveupdate/machine';
import { PROBE, SERVICE_USER, TEST_DEVICES, bootedMachine, errnoOf, testImage } from './helpers.js';

const RAMFILE_SIZE = 4 * 4096;
const RAMFILE_IOC_INFO = 0x80105200;

describe('syscalls', () => {
  it('fail with the Linux errno for a missing path, a bad fd, an unknown ioctl and an unknown syscall', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    expect(await errnoOf(process.open('/dev/nonexistent'))).toEqual(['ENOENT', 2]);
    expect(await errnoOf(process.open(''))).toEqual(['ENOENT', 2]);
    expect(await errnoOf(process.open(`/dev/${'x'.repeat(5000)}`))).toEqual(['ENAMETOOLONG', 36]);
    expect(await errnoOf(process.read(42, 1))).toEqual(['EBADF', 9]);
    expect(await errnoOf(process.read(-1, 1))).toEqual(['EBADF', 9]);
    const fd = await process.open('/dev/null');
    expect(await errnoOf(process.ioctl(fd, 0x5401))).toEqual(['ENOTTY', 25]);
    expect(await errnoOf(process.read(fd, -5))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.write(fd, 'text' as unknown as Uint8Array))).toEqual([
      'EFAULT',
      14,
    ]);
    expect(await errnoOf(process.mmap(fd, 4096))).toEqual(['ENODEV', 19]);
    expect(await errnoOf(process.syscall('no_such_call'))).toEqual(['ENOSYS', 38]);
    await process.close(fd);
    expect(await errnoOf(process.close(fd))).toEqual(['EBADF', 9]);
  });

  it('read end of file from /dev/null and swallow whole writes', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const fd = await process.open('/dev/null');
    expect(await process.write(fd, new Uint8Array(100))).toBe(100);
    expect((await process.read(fd, 10)).length).toBe(0);
  });

  it('allow one open of an exclusive device at a time, even from the same process', async () => {
    const machine = await bootedMachine();
    const a = machine.spawn();
    const b = machine.spawn();
    const fd = await a.open('/dev/exclusive');
    expect(await errnoOf(a.open('/dev/exclusive'))).toEqual(['EBUSY', 16]);
    expect(await errnoOf(b.open('/dev/exclusive'))).toEqual(['EBUSY', 16]);
    await a.close(fd);
    expect(await b.open('/dev/exclusive')).toBeGreaterThanOrEqual(0);
  });

  it('read, write and seek a device file through its file position, and pread/pwrite beside it', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const fd = await process.open('/dev/ramfile');
    expect(await process.write(fd, new Uint8Array([1, 2, 3, 4, 5]))).toBe(5);
    expect(await process.lseek(fd, 1, SEEK_SET)).toBe(1);
    expect([...(await process.read(fd, 3))]).toEqual([2, 3, 4]);
    expect(await process.pwrite(fd, new Uint8Array([9]), 0)).toBe(1);
    expect([...(await process.pread(fd, 2, 0))]).toEqual([9, 2]);
    // pread/pwrite leave the position where read left it.
    expect([...(await process.read(fd, 1))]).toEqual([5]);
    expect(await process.lseek(fd, -2, SEEK_END)).toBe(RAMFILE_SIZE - 2);
    expect((await process.read(fd, 10)).length).toBe(2);
    expect(await errnoOf(process.lseek(fd, 0, 7))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.lseek(fd, -1, SEEK_SET))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.pwrite(fd, new Uint8Array(1), RAMFILE_SIZE))).toEqual([
      'EFBIG',
      27,
    ]);
  });

  it('enforce the access mode of the open file', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const readOnly = await process.open('/dev/ramfile', O_RDONLY);
    const writeOnly = await process.open('/dev/ramfile', O_WRONLY);
    expect(await errnoOf(process.write(readOnly, new Uint8Array(1)))).toEqual(['EBADF', 9]);
    expect(await errnoOf(process.read(writeOnly, 1))).toEqual(['EBADF', 9]);
    expect(await errnoOf(process.open('/dev/ramfile', 3))).toEqual(['EINVAL', 22]);
  });

  it('copy what an ioctl writes into its argument back to the caller', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const fd = await process.open('/dev/ramfile');
    const arg = new Uint8Array(12);
    expect(await process.ioctl(fd, RAMFILE_IOC_INFO, arg)).toBe(0);
    const view = new DataView(arg.buffer);
    expect(view.getUint32(0, true)).toBe(RAMFILE_SIZE);
    const phys = Number(view.getBigUint64(4, true));
    expect(phys % RAMFILE_SIZE).toBe(0);
    expect(await errnoOf(process.ioctl(fd, RAMFILE_IOC_INFO, new Uint8Array(4)))).toEqual([
      'EINVAL',
      22,
    ]);
    expect(await errnoOf(process.ioctl(fd, RAMFILE_IOC_INFO + 1, arg))).toEqual(['ENOTTY', 25]);
  });

  it('map a file with zero copies: bytes written through the mapping are the file’s bytes', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const fd = await process.open('/dev/ramfile');
    const mapping = await process.mmap(fd, 8192, 4096);
    expect(mapping.segments).toHaveLength(1);
    mapping.segments[0]!.bytes.set([7, 8, 9], 10);
    expect([...(await process.pread(fd, 3, 4096 + 10))]).toEqual([7, 8, 9]);
    expect(await errnoOf(process.mmap(fd, 4096, 100))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.mmap(fd, 0))).toEqual(['EINVAL', 22]);
    await process.munmap(mapping);
    expect(await errnoOf(process.munmap(mapping))).toEqual(['EINVAL', 22]);
  });

  it('release a file once, when its last fd and mapping are gone', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const released = () => process.syscall('test_devices_released');
    const fd = await process.open('/dev/ramfile');
    const copy = await process.dup(fd);
    const mapping = await process.mmap(fd, 4096);
    await process.close(fd);
    await process.close(copy);
    expect(await released()).toBe(0);
    await process.munmap(mapping);
    expect(await released()).toBe(1);
  });

  it('keep fd tables per process, with O_CLOEXEC set by open, cleared by dup, and changed by fcntl', async () => {
    const machine = await bootedMachine();
    const a = machine.spawn();
    const b = machine.spawn();
    const fd = await a.open('/dev/null', O_CLOEXEC);
    expect(await errnoOf(b.read(fd, 1))).toEqual(['EBADF', 9]);
    expect(await a.fcntl(fd, F_GETFD)).toBe(FD_CLOEXEC);
    const copy = await a.dup(fd);
    expect(copy).toBe(fd + 1);
    expect(await a.fcntl(copy, F_GETFD)).toBe(0);
    await a.fcntl(copy, F_SETFD, FD_CLOEXEC);
    expect(await a.fcntl(copy, F_GETFD)).toBe(FD_CLOEXEC);
    expect(await a.fcntl(fd, F_DUPFD, 10)).toBe(10);
    expect(await errnoOf(a.fcntl(fd, 9999))).toEqual(['EINVAL', 22]);
  });

  it('take no file reference in a dup or F_DUPFD that fails with EMFILE', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const fd = await process.open('/dev/exclusive');
    for (;;) {
      const result = await errnoOf(process.dup(fd));
      if (result !== 'resolved') {
        expect(result).toEqual(['EMFILE', 24]);
        break;
      }
    }
    expect(await errnoOf(process.dup(fd))).toEqual(['EMFILE', 24]);
    expect(await errnoOf(process.fcntl(fd, F_DUPFD, 0))).toEqual(['EMFILE', 24]);
    await process.exit();
    // Every reference the fds held is gone, so the exclusive device is free again.
    const other = machine.spawn();
    expect(await other.open('/dev/exclusive')).toBeGreaterThanOrEqual(0);
  });

  it('close every fd of a process that exits, after which its syscalls fail with ESRCH', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const observer = machine.spawn();
    await process.open('/dev/ramfile');
    await process.open('/dev/ramfile');
    await process.exit();
    expect(process.alive).toBe(false);
    expect(await observer.syscall('test_devices_released')).toBe(2);
    expect(await errnoOf(process.open('/dev/null'))).toEqual(['ESRCH', 3]);
  });

  it('unload a module with exit, refuse one without (EBUSY), and report unknown modules (ENOENT)', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    await process.deleteModule('test_devices');
    expect(await errnoOf(process.open('/dev/ramfile'))).toEqual(['ENOENT', 2]);
    expect(await errnoOf(process.deleteModule('test_devices'))).toEqual(['ENOENT', 2]);
    expect(await errnoOf(process.deleteModule('kho_probe'))).toEqual(['EBUSY', 16]);
  });

  it('fail ftruncate, fallocate and unknown fcntl commands on files that do not support them', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const fd = await process.open('/dev/null');
    expect(await errnoOf(process.ftruncate(fd, 0))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.fallocate(fd, 0, 0, 4096))).toEqual(['EOPNOTSUPP', 95]);
    expect(await errnoOf(process.fcntl(fd, 1033, 1))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.memfdCreate('x'))).toEqual(['ENOSYS', 38]);
    const readOnly = await process.open('/dev/null', O_RDONLY);
    expect(await errnoOf(process.fallocate(readOnly, 0, 0, 4096))).toEqual(['EBADF', 9]);
  });

  it('let a module use a service that a module before it in the image provided', async () => {
    const before = await bootedMachine(
      testImage('6.18.0', { modules: [PROBE, TEST_DEVICES, SERVICE_USER] }),
    );
    expect(await before.spawn().syscall('service_user')).toBe(0);
    const after = await bootedMachine(
      testImage('6.18.0', { modules: [SERVICE_USER, TEST_DEVICES] }),
    );
    expect(await after.spawn().syscall('service_user')).toBe('no service');
  });

  it('log like dmesg, with timestamps that start near zero and never go backwards', async () => {
    const machine = await bootedMachine();
    const lines = machine.dmesg().split('\n');
    expect(lines[0]).toMatch(/^\[\s+0\.\d{6}\] Linux version 6\.18\.0/);
    const stamps = lines.map((line) => Number(/^\[\s*([\d.]+)\]/.exec(line)![1]));
    expect(stamps[0]).toBeLessThan(1);
    expect(stamps).toEqual([...stamps].sort((x, y) => x - y));
  });
});
