import { describe, expect, it } from 'vitest';
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
  FD_CLOEXEC,
  F_GETFD,
  F_GETFL,
  O_NONBLOCK,
  O_RDWR,
  type Process,
} from '@liveupdate/machine';
import { bootedMachine, errnoOf, kexec, pending, testImage } from './helpers.js';

const ULLONG_MAX = 0xffff_ffff_ffff_ffffn;

function u64(value: bigint): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, value, true);
  return bytes;
}

async function readCounter(process: Process, fd: number, count = 8): Promise<bigint> {
  const data = await process.read(fd, count);
  expect(data.length).toBe(8);
  return new DataView(data.buffer, data.byteOffset, 8).getBigUint64(0, true);
}

describe('eventfd', () => {
  it('reads the counter as a little-endian u64 and resets it; writes add to it', async () => {
    const process = (await bootedMachine()).spawn();
    const fd = await process.eventfd(3, EFD_NONBLOCK);
    expect(await process.fcntl(fd, F_GETFL)).toBe(O_RDWR | O_NONBLOCK);
    expect(await readCounter(process, fd, 64)).toBe(3n);
    expect(await errnoOf(process.read(fd, 8))).toEqual(['EAGAIN', 11]);
    expect(await process.write(fd, u64(5n))).toBe(8);
    // Only the first 8 bytes of a longer buffer count, as in Linux.
    expect(await process.write(fd, new Uint8Array([...u64(0x1_0000_0007n), 0xff]))).toBe(8);
    expect(await readCounter(process, fd)).toBe(0x1_0000_000cn);
    expect(await errnoOf(process.read(fd, 8))).toEqual(['EAGAIN', 11]);
  });

  it('refuses short buffers, 2^64 - 1, and a sum past 0xfffffffffffffffe with the Linux errno', async () => {
    const process = (await bootedMachine()).spawn();
    const fd = await process.eventfd(1, EFD_NONBLOCK);
    expect(await errnoOf(process.read(fd, 7))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.write(fd, new Uint8Array(7)))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.write(fd, u64(ULLONG_MAX)))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.pread(fd, 8, 0))).toEqual(['ESPIPE', 29]);
    // 1 + (ULLONG_MAX - 2) = ULLONG_MAX - 1, the largest value the counter may hold.
    expect(await process.write(fd, u64(ULLONG_MAX - 2n))).toBe(8);
    expect(await errnoOf(process.write(fd, u64(1n)))).toEqual(['EAGAIN', 11]);
    expect(await readCounter(process, fd)).toBe(ULLONG_MAX - 1n);
  });

  it('checks eventfd2 flags and the initial value, and honours EFD_CLOEXEC', async () => {
    const process = (await bootedMachine()).spawn();
    expect(await errnoOf(process.eventfd(0, 0x4))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.eventfd(0, EFD_SEMAPHORE | 0o100))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.eventfd(2 ** 32))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.eventfd(-1))).toEqual(['EINVAL', 22]);
    const plain = await process.eventfd(2 ** 32 - 1, EFD_NONBLOCK);
    expect(await readCounter(process, plain)).toBe(0xffff_ffffn);
    expect(await process.fcntl(plain, F_GETFD)).toBe(0);
    const cloexec = await process.eventfd(0, EFD_CLOEXEC);
    expect(await process.fcntl(cloexec, F_GETFD)).toBe(FD_CLOEXEC);
    expect(await process.fcntl(cloexec, F_GETFL)).toBe(O_RDWR);
  });

  it('with EFD_SEMAPHORE, reads 1 at a time and decrements', async () => {
    const process = (await bootedMachine()).spawn();
    const fd = await process.eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
    await process.write(fd, u64(1n));
    expect([
      await readCounter(process, fd),
      await readCounter(process, fd),
      await readCounter(process, fd),
    ]).toEqual([1n, 1n, 1n]);
    expect(await errnoOf(process.read(fd, 8))).toEqual(['EAGAIN', 11]);
  });

  it('blocks a read of a zero counter until a write, without holding up other syscalls', async () => {
    const process = (await bootedMachine()).spawn();
    const fd = await process.eventfd();
    const read = readCounter(process, fd);
    expect(await pending(process, read)).toBe(true);
    await process.write(fd, u64(4n));
    expect(await read).toBe(4n);
  });

  it('blocks a write that would overflow until a read makes room', async () => {
    const process = (await bootedMachine()).spawn();
    const fd = await process.eventfd();
    await process.write(fd, u64(ULLONG_MAX - 1n));
    const write = process.write(fd, u64(5n));
    expect(await pending(process, write)).toBe(true);
    expect(await readCounter(process, fd)).toBe(ULLONG_MAX - 1n);
    expect(await write).toBe(8);
    expect(await readCounter(process, fd)).toBe(5n);
  });

  it('ends a blocked read with EINTR when its process exits', async () => {
    const process = (await bootedMachine()).spawn();
    const fd = await process.eventfd();
    const read = process.read(fd, 8);
    expect(await pending(process, read)).toBe(true);
    await process.exit();
    expect(await errnoOf(read)).toEqual(['EINTR', 4]);
  });

  it('does not hold up a kexec: a blocked read ends with the process', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const fd = await process.eventfd();
    const read = process.read(fd, 8);
    expect(await pending(process, read)).toBe(true);
    const next = await kexec(machine, process, testImage('6.18.1'));
    expect(await errnoOf(read)).toEqual(['ESRCH', 3]);
    expect(machine.kernelVersion).toBe('6.18.1');
    // The new kernel knows nothing of the old eventfd; a new one works.
    const fresh = await next.eventfd(9, EFD_NONBLOCK);
    expect(await readCounter(next, fresh)).toBe(9n);
  });
});
