import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice, type LiveUpdateSession } from '@liveupdate/core';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FD_CLOEXEC,
  F_ADD_SEALS,
  F_GETFD,
  F_GETFL,
  F_GET_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MFD_ALLOW_SEALING,
  MFD_HUGETLB,
  O_ACCMODE,
  O_RDWR,
  PAGE_SIZE,
  SEEK_CUR,
  SEEK_END,
  type Machine,
  type Process,
} from '@liveupdate/machine';
import {
  bootedMachine,
  bytesAt,
  errnoOf,
  expectBytes,
  inode,
  kexec,
  MiB,
  pattern,
  POISON,
  readAll,
  stats,
  testImage,
  writeAll,
} from './helpers.js';

const TOKEN = 7n;

/** The physical address and length of every piece of the file, as mmap shows them. */
async function frames(process: Process, fd: number, size: number): Promise<[number, number][]> {
  if (size === 0) return [];
  const mapping = await process.mmap(fd, size);
  const out = mapping.segments.map((s): [number, number] => [s.phys, s.bytes.length]);
  await process.munmap(mapping);
  return out;
}

async function boot(): Promise<{ machine: Machine; process: Process }> {
  const machine = await bootedMachine(testImage('6.18.0'));
  return { machine, process: machine.spawn() };
}

/** Open /dev/liveupdate, create session `name` and preserve `fd` in it under {@link TOKEN}. */
async function preserve(process: Process, fd: number, name = 'vm0'): Promise<LiveUpdateSession> {
  const device = await LiveUpdateDevice.open(process);
  const session = await device.createSession(name);
  await session.preserveFd(fd, TOKEN);
  await device.close();
  return session;
}

/** In the new kernel: retrieve session `name` and the memfd under {@link TOKEN}. */
async function retrieve(
  process: Process,
  name = 'vm0',
): Promise<{ session: LiveUpdateSession; fd: number }> {
  const device = await LiveUpdateDevice.open(process);
  const session = await device.retrieveSession(name);
  await device.close();
  return { session, fd: await session.retrieveFd(TOKEN) };
}

describe('a memfd across a live update', () => {
  it.each([
    ['a few pages of data', 5 * PAGE_SIZE + 3],
    ['64 MiB of data', 64 * MiB],
    ['an empty memfd', 0],
  ])(
    'keeps %s, with size, position and seals, on the same frames',
    async (_what, size) => {
      const { machine, process } = await boot();
      const fd = await process.memfdCreate('cache', MFD_ALLOW_SEALING);
      const data = pattern(size, 11);
      await writeAll(process, fd, data);
      await process.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
      await process.lseek(fd, Math.floor(size / 3));
      const before = await frames(process, fd, size);
      await preserve(process, fd);
      await process.close(fd);

      const next = await kexec(machine, process, testImage('6.18.1'));
      const { session, fd: memfd } = await retrieve(next);
      expect(await next.lseek(memfd, 0, SEEK_CUR)).toBe(Math.floor(size / 3));
      expect(await next.lseek(memfd, 0, SEEK_END)).toBe(size);
      expect(await next.fcntl(memfd, F_GET_SEALS)).toBe(F_SEAL_SHRINK | F_SEAL_GROW);
      expect((await next.fcntl(memfd, F_GETFL)) & O_ACCMODE).toBe(O_RDWR);
      expect(await next.fcntl(memfd, F_GETFD)).toBe(FD_CLOEXEC);
      // Mapped before anything else looks at it (its runs as they were retrieved), then after a
      // read has put every folio in the page cache: the same frames both times.
      expect(await frames(next, memfd, size)).toEqual(before);
      expectBytes(await readAll(next, memfd, size), data);
      expect(await frames(next, memfd, size)).toEqual(before);
      await session.finish();
      expectBytes(await readAll(next, memfd, size), data);
    },
    60_000,
  );

  it('records the position as it is at reboot', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('pos');
    await process.write(fd, pattern(1000));
    await preserve(process, fd);
    await process.lseek(fd, 123);
    const next = await kexec(machine, process, testImage('6.18.1'));
    const { fd: memfd } = await retrieve(next);
    expect(await next.lseek(memfd, 0, SEEK_CUR)).toBe(123);
  });

  it('keeps a memfd created without MFD_ALLOW_SEALING sealed with F_SEAL_SEAL', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('plain');
    await preserve(process, fd);
    const next = await kexec(machine, process, testImage('6.18.1'));
    const { fd: memfd } = await retrieve(next);
    expect(await next.fcntl(memfd, F_GET_SEALS)).toBe(F_SEAL_SEAL);
    expect(await errnoOf(next.fcntl(memfd, F_ADD_SEALS, F_SEAL_WRITE))).toBe('EPERM');
  });

  it('carries over writes made inside the size after preserve, through write and a mapping', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('live');
    const size = 3 * MiB;
    await process.ftruncate(fd, size);
    await preserve(process, fd);
    await process.pwrite(fd, pattern(5000, 1), 100);
    const mapping = await process.mmap(fd, size);
    bytesAt(mapping, 2 * MiB + 7, 300).set(pattern(300, 2));
    const next = await kexec(machine, process, testImage('6.18.1'));
    const { fd: memfd } = await retrieve(next);
    const expected = new Uint8Array(size);
    expected.set(pattern(5000, 1), 100);
    expected.set(pattern(300, 2), 2 * MiB + 7);
    expectBytes(await readAll(next, memfd, size), expected);
  });

  it('refuses every size change of a preserved memfd with EPERM, and allows the rest', async () => {
    const { process } = await boot();
    const fd = await process.memfdCreate('frozen', MFD_ALLOW_SEALING);
    await process.write(fd, pattern(2 * PAGE_SIZE));
    await preserve(process, fd);
    expect(await errnoOf(process.pwrite(fd, pattern(10), 2 * PAGE_SIZE - 5))).toBe('EPERM');
    expect(await errnoOf(process.write(fd, pattern(1)))).toBe('EPERM');
    expect(await errnoOf(process.ftruncate(fd, PAGE_SIZE))).toBe('EPERM');
    expect(await errnoOf(process.ftruncate(fd, 4 * PAGE_SIZE))).toBe('EPERM');
    expect(await errnoOf(process.fallocate(fd, 0, 0, PAGE_SIZE))).toBe('EPERM');
    expect(await errnoOf(process.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 8 * PAGE_SIZE))).toBe(
      'EPERM',
    );
    expect(
      await errnoOf(process.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 10)),
    ).toBe('EPERM');
    expect(await process.pwrite(fd, pattern(10), 2 * PAGE_SIZE - 10)).toBe(10);
    await process.ftruncate(fd, 2 * PAGE_SIZE);
    await process.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
    expect(await process.lseek(fd, 0, SEEK_END)).toBe(2 * PAGE_SIZE);
  });

  it('makes the memfd resizable again and preserves nothing when the session is closed', async () => {
    const { process } = await boot();
    const fd = await process.memfdCreate('undo');
    await writeAll(process, fd, pattern(3 * MiB));
    const before = await stats(process);
    expect(before.pinnedFrames).toBe(0);
    const session = await preserve(process, fd);
    const preserved = await stats(process);
    expect(preserved.kho.preservedFolios).toBeGreaterThan(before.kho.preservedFolios);
    // Every frame of the file is pinned while it is preserved, as memfd_pin_folios does.
    expect(preserved.pinnedFrames).toBe((3 * MiB) / PAGE_SIZE);
    await session.close();
    expect(await stats(process)).toEqual(before);
    expectBytes(await readAll(process, fd, 3 * MiB), pattern(3 * MiB));
    await process.ftruncate(fd, MiB);
    await process.pwrite(fd, pattern(10), 5 * MiB);
    expect(await process.lseek(fd, 0, SEEK_END)).toBe(5 * MiB + 10);
  });

  it('frees the frames of a memfd that is never retrieved when the session finishes', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('dropped');
    await writeAll(process, fd, pattern(8 * MiB));
    await preserve(process, fd);
    const next = await kexec(machine, process, testImage('6.18.1'));
    const device = await LiveUpdateDevice.open(next);
    const session = await device.retrieveSession('vm0');
    const before = await stats(next);
    await session.finish();
    const after = await stats(next);
    // Four order-9 folios, the memfd_luo_ser page, and the folio array's chunk and run.
    const memfdFrames = 4 * 512 + 1 + 2;
    expect(before.kho.unrestoredFrames - after.kho.unrestoredFrames).toBeGreaterThanOrEqual(
      memfdFrames,
    );
    expect(after.pages.free - before.pages.free).toBeGreaterThanOrEqual(memfdFrames);
    expect(after.kho.unrestoredFolios).toBe(0);
  });

  it('finishes a retrieved memfd when its session fd is closed, leaving the memfd usable', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('kept');
    await process.write(fd, pattern(PAGE_SIZE));
    await preserve(process, fd);
    const next = await kexec(machine, process, testImage('6.18.1'));
    const { session, fd: memfd } = await retrieve(next);
    await session.close();
    expect((await stats(next)).kho.unrestoredFolios).toBe(0);
    // No longer managed by LUO: it can grow, and be preserved again.
    await next.pwrite(memfd, pattern(10), 10 * PAGE_SIZE);
    expect((await inode(next, memfd)).frozen).toBe(false);
    await preserve(next, memfd, 'again');
  });

  it('carries the data forward through three live updates in a row', async () => {
    const { machine, process } = await boot();
    let current = process;
    let fd = await current.memfdCreate('chain', MFD_ALLOW_SEALING);
    const chunk = 2 * MiB + 3 * PAGE_SIZE;
    let expected = pattern(chunk, 0);
    await writeAll(current, fd, expected);
    const firstFrames = await frames(current, fd, chunk);
    await preserve(current, fd);

    for (const [generation, version] of ['6.18.1', '6.18.2', '6.18.3'].entries()) {
      current = await kexec(machine, current, testImage(version));
      const { session, fd: memfd } = await retrieve(current);
      fd = memfd;
      expectBytes(await readAll(current, fd, expected.length), expected);
      // The first generation's bytes still sit in the frames they were written to.
      expect(await frames(current, fd, chunk)).toEqual(firstFrames);
      await session.finish();
      await session.close();
      // Grow it in the new kernel, then hand it on.
      const more = pattern(chunk, generation + 1);
      await writeAll(current, fd, more, expected.length);
      expected = new Uint8Array([...expected, ...more]);
      await preserve(current, fd);
    }
    expect(machine.bootCount).toBe(4);
    const last = await kexec(machine, current, testImage('6.18.4'));
    const { fd: memfd } = await retrieve(last);
    expectBytes(await readAll(last, memfd, expected.length), expected);
  });

  it('refuses to preserve a retrieved memfd again before its session finishes (EBUSY), and accepts it after', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('again');
    await writeAll(process, fd, pattern(3 * PAGE_SIZE, 5));
    await preserve(process, fd);
    const next = await kexec(machine, process, testImage('6.18.1'));
    const { session: incoming, fd: memfd } = await retrieve(next);
    const device = await LiveUpdateDevice.open(next);
    const outgoing = await device.createSession('vm1');
    expect(await errnoOf(outgoing.preserveFd(memfd, TOKEN))).toBe('EBUSY');
    await incoming.finish();
    await outgoing.preserveFd(memfd, TOKEN);
    const third = await kexec(machine, next, testImage('6.18.2'));
    const { fd: carried } = await retrieve(third, 'vm1');
    expectBytes(await readAll(third, carried, 3 * PAGE_SIZE), pattern(3 * PAGE_SIZE, 5));
  });

  it('carries several memfds of one session, each to its own token, and empty ones too', async () => {
    const { machine, process } = await boot();
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession('many');
    const sizes = [0, PAGE_SIZE, 3 * MiB + 17, 0, 5 * PAGE_SIZE];
    for (const [i, size] of sizes.entries()) {
      const fd = await process.memfdCreate(`m${i}`);
      await writeAll(process, fd, pattern(size, i));
      await session.preserveFd(fd, BigInt(100 + i));
      await process.close(fd);
    }
    const next = await kexec(machine, process, testImage('6.18.1'));
    const incoming = await (await LiveUpdateDevice.open(next)).retrieveSession('many');
    // Any order: backwards here.
    for (const [i, size] of [...sizes.entries()].reverse()) {
      const fd = await incoming.retrieveFd(BigInt(100 + i));
      expect(await next.lseek(fd, 0, SEEK_END)).toBe(size);
      expectBytes(await readAll(next, fd, size), pattern(size, i));
    }
  });

  it('carries one session of 500 memfds, every one with its own bytes', async () => {
    const { machine, process } = await boot();
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession('five-hundred');
    const count = 500;
    for (let i = 0; i < count; i++) {
      const fd = await process.memfdCreate(`m${i}`);
      await process.write(fd, pattern(64 + i, i));
      await session.preserveFd(fd, BigInt(i));
      await process.close(fd);
    }
    const next = await kexec(machine, process, testImage('6.18.1'));
    const incoming = await (await LiveUpdateDevice.open(next)).retrieveSession('five-hundred');
    for (let i = 0; i < count; i++) {
      const fd = await incoming.retrieveFd(BigInt(i));
      expectBytes(await next.pread(fd, 64 + i, 0), pattern(64 + i, i));
      await next.close(fd);
    }
    await incoming.finish();
  });

  it('refuses an MFD_HUGETLB memfd with ENOENT: no handler takes it', async () => {
    const { process } = await boot();
    const fd = await process.memfdCreate('huge', MFD_HUGETLB);
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession('vm0');
    expect(await errnoOf(session.preserveFd(fd, TOKEN))).toBe('ENOENT');
  });

  it('refuses to preserve the same memfd twice, even through a dup, with EBUSY', async () => {
    const { process } = await boot();
    const fd = await process.memfdCreate('once');
    const session = await preserve(process, fd);
    expect(await errnoOf(session.preserveFd(await process.dup(fd), TOKEN + 1n))).toBe('EBUSY');
  });

  it('hands nothing over for a memfd that is not preserved: its frames come back as poison', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('lost');
    await process.write(fd, pattern(PAGE_SIZE));
    const [[phys]] = (await frames(process, fd, PAGE_SIZE)) as [[number, number]];
    expect(machine.memory.read(phys, 16)).toEqual(pattern(16));
    await kexec(machine, process, testImage('6.18.1'));
    // RAM itself shows the poison (modules of the next kernel cannot read a free frame).
    const after = machine.memory.read(phys, PAGE_SIZE);
    expect(after.every((b) => b === POISON)).toBe(true);
  });
});
