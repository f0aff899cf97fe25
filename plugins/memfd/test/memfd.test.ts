import { describe, expect, it } from 'vitest';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FD_CLOEXEC,
  F_ADD_SEALS,
  F_GETFD,
  F_GETFL,
  F_GET_SEALS,
  F_SEAL_EXEC,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  MFD_HUGETLB,
  O_ACCMODE,
  O_RDWR,
  PAGE_SIZE,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
  type Process,
} from '@liveupdate/machine';
import {
  bootedMachine,
  bytesAt,
  errnoOf,
  expectBytes,
  inode,
  MiB,
  pattern,
  physAt,
  readAll,
  stats,
  testImage,
  writeAll,
} from './helpers.js';

/** A process on a kernel with the memfd module and no LUO. */
async function spawn(): Promise<Process> {
  const machine = await bootedMachine(testImage('6.18.0', { luo: false }));
  return machine.spawn();
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const zeros = (n: number): Uint8Array => new Uint8Array(n);

describe('memfd_create', () => {
  it('returns an empty read-write memfd sealed with F_SEAL_SEAL unless sealing is allowed', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('cache');
    expect(await p.read(fd, 100)).toEqual(new Uint8Array(0));
    expect((await p.fcntl(fd, F_GETFL)) & O_ACCMODE).toBe(O_RDWR);
    expect(await p.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SEAL);
    expect(await p.fcntl(fd, F_GETFD)).toBe(0);
    const sealable = await p.memfdCreate('sealable', MFD_ALLOW_SEALING);
    expect(await p.fcntl(sealable, F_GET_SEALS)).toBe(0);
  });

  it('sets FD_CLOEXEC on the fd with MFD_CLOEXEC', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('x', MFD_CLOEXEC);
    expect(await p.fcntl(fd, F_GETFD)).toBe(FD_CLOEXEC);
  });

  it('refuses unknown flags with EINVAL', async () => {
    const p = await spawn();
    for (const flags of [0x8, 0x100, 0x8000_0000, 2 ** 32, 2 ** 32 + MFD_CLOEXEC]) {
      expect(await errnoOf(p.memfdCreate('x', flags)), `flags ${flags}`).toBe('EINVAL');
    }
  });

  it('takes names up to 249 bytes of UTF-8, the empty name included, and refuses longer ones with EINVAL', async () => {
    const p = await spawn();
    expect(await p.memfdCreate('')).toBeGreaterThanOrEqual(0);
    expect(await p.memfdCreate('a'.repeat(249))).toBeGreaterThanOrEqual(0);
    expect(await errnoOf(p.memfdCreate('a'.repeat(250)))).toBe('EINVAL');
    // "é" is two bytes: 125 of them make 250.
    expect(await p.memfdCreate('é'.repeat(124) + 'a')).toBeGreaterThanOrEqual(0);
    expect(await errnoOf(p.memfdCreate('é'.repeat(125)))).toBe('EINVAL');
  });

  it('refuses a name that is not a string with EFAULT', async () => {
    const p = await spawn();
    expect(await errnoOf(p.syscall('memfd_create', 42, 0))).toBe('EFAULT');
  });

  it('gives each memfd its own contents', async () => {
    const p = await spawn();
    const a = await p.memfdCreate('a');
    const b = await p.memfdCreate('b');
    await p.write(a, text('first'));
    await p.write(b, text('second'));
    expect(await p.pread(a, 100, 0)).toEqual(text('first'));
    expect(await p.pread(b, 100, 0)).toEqual(text('second'));
    expect((await inode(p, a)).id).not.toBe((await inode(p, b)).id);
  });
});

describe('memfd read, write and lseek', () => {
  it('reads back what was written, advancing the shared position', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('rw');
    expect(await p.write(fd, text('hello '))).toBe(6);
    expect(await p.write(fd, text('world'))).toBe(5);
    expect(await p.lseek(fd, 0, SEEK_CUR)).toBe(11);
    expect(await p.lseek(fd, 0, SEEK_SET)).toBe(0);
    expect(await p.read(fd, 5)).toEqual(text('hello'));
    const dup = await p.dup(fd);
    expect(await p.read(dup, 100)).toEqual(text(' world'));
    expect(await p.read(fd, 100)).toEqual(new Uint8Array(0));
  });

  it('pread and pwrite work at an offset without moving the position', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('p');
    await p.write(fd, text('0123456789'));
    expect(await p.pwrite(fd, text('ab'), 3)).toBe(2);
    expect(await p.pread(fd, 4, 2)).toEqual(text('2ab5'));
    expect(await p.lseek(fd, 0, SEEK_CUR)).toBe(10);
  });

  it('grows the file on a write past the end, the gap reading as zeros', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('grow');
    await p.write(fd, text('abc'));
    const far = 3 * PAGE_SIZE + 100;
    expect(await p.pwrite(fd, text('xyz'), far)).toBe(3);
    expect(await p.lseek(fd, 0, SEEK_END)).toBe(far + 3);
    const all = await p.pread(fd, far + 100, 0);
    expect(all.length).toBe(far + 3);
    expect(all.subarray(0, 3)).toEqual(text('abc'));
    expect(all.subarray(3, far).every((b) => b === 0)).toBe(true);
    expect(all.subarray(far)).toEqual(text('xyz'));
  });

  it('copies a write that spans many pages and folios exactly', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('span');
    const data = pattern(5 * MiB + 123, 3);
    await writeAll(p, fd, data, 777);
    expectBytes(await readAll(p, fd, 777 + data.length), new Uint8Array([...zeros(777), ...data]));
  });

  it('seeks from the start, the position and the end, and refuses a negative result with EINVAL', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('seek');
    await p.write(fd, pattern(1000));
    expect(await p.lseek(fd, 10, SEEK_SET)).toBe(10);
    expect(await p.lseek(fd, 5, SEEK_CUR)).toBe(15);
    expect(await p.lseek(fd, -100, SEEK_END)).toBe(900);
    expect(await p.lseek(fd, 4000, SEEK_END)).toBe(5000);
    expect(await p.read(fd, 10)).toEqual(new Uint8Array(0));
    expect(await errnoOf(p.lseek(fd, -1, SEEK_SET))).toBe('EINVAL');
    expect(await errnoOf(p.lseek(fd, -1001, SEEK_END))).toBe('EINVAL');
    expect(await p.lseek(fd, 0, SEEK_CUR)).toBe(5000);
  });
});

describe('memfd ftruncate and fallocate', () => {
  it('ftruncate grows with zeros and shrinks, and regrown bytes read as zeros', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('t');
    await p.write(fd, pattern(3 * PAGE_SIZE));
    await p.ftruncate(fd, 100);
    expect(await p.lseek(fd, 0, SEEK_END)).toBe(100);
    expect(await p.pread(fd, 1000, 0)).toEqual(pattern(3 * PAGE_SIZE).subarray(0, 100));
    await p.ftruncate(fd, 2 * PAGE_SIZE);
    const regrown = await p.pread(fd, 3 * PAGE_SIZE, 0);
    expect(regrown.length).toBe(2 * PAGE_SIZE);
    expect(regrown.subarray(0, 100)).toEqual(pattern(100));
    expect(regrown.subarray(100).every((b) => b === 0)).toBe(true);
  });

  it('keeps the data below the new end when shrinking splits a large folio', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('split');
    const data = pattern(4 * MiB, 9);
    await writeAll(p, fd, data);
    expect((await inode(p, fd)).folios.map((f) => f.order)).toEqual([9, 9]);
    const keep = MiB + 5 * PAGE_SIZE + 17;
    await p.ftruncate(fd, keep);
    const view = await inode(p, fd);
    // 262 pages remain in folios of 256, 4 and 2 pages: none crosses the end.
    expect(view.folios.map((f) => [f.index, f.order])).toEqual([
      [0, 8],
      [256, 2],
      [260, 1],
    ]);
    await p.ftruncate(fd, 4 * MiB);
    const back = await readAll(p, fd, 4 * MiB);
    expectBytes(back.subarray(0, keep), data.subarray(0, keep));
    expect(back.subarray(keep).every((b) => b === 0)).toBe(true);
  });

  it('refuses a negative length with EINVAL', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('t');
    expect(await errnoOf(p.ftruncate(fd, -1))).toBe('EINVAL');
  });

  it('fallocate mode 0 allocates and grows; FALLOC_FL_KEEP_SIZE allocates without growing', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('f');
    await p.fallocate(fd, 0, 0, 3 * PAGE_SIZE);
    expect(await p.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE);
    expect((await inode(p, fd)).folios.map((f) => f.order)).toEqual([1, 0]);
    await p.fallocate(fd, FALLOC_FL_KEEP_SIZE, 3 * PAGE_SIZE, 2 * PAGE_SIZE);
    expect(await p.lseek(fd, 0, SEEK_END)).toBe(3 * PAGE_SIZE);
    expect((await inode(p, fd)).folios.map((f) => f.index)).toEqual([0, 2, 3, 4]);
    expect(await p.pread(fd, 10 * PAGE_SIZE, 0)).toEqual(zeros(3 * PAGE_SIZE));
  });

  it('punches a hole that reads as zeros, keeps the size and frees whole folios', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('hole');
    const data = pattern(8 * PAGE_SIZE);
    await p.write(fd, data);
    expect((await inode(p, fd)).folios.map((f) => f.order)).toEqual([3]);
    await p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 200);
    await p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 8 * PAGE_SIZE);
    expect((await inode(p, fd)).folios).toEqual([]);
    expect(await p.pread(fd, 9 * PAGE_SIZE, 0)).toEqual(zeros(8 * PAGE_SIZE));
    await p.pwrite(fd, data, 0);
    await p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 10, 20);
    const expected = data.slice();
    expected.fill(0, 10, 30);
    expect(await p.pread(fd, 8 * PAGE_SIZE, 0)).toEqual(expected);
  });

  it('refuses FALLOC_FL_PUNCH_HOLE without FALLOC_FL_KEEP_SIZE, and unknown modes, with EOPNOTSUPP', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('f');
    expect(await errnoOf(p.fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 10))).toBe('EOPNOTSUPP');
    expect(await errnoOf(p.fallocate(fd, 0x10, 0, 10))).toBe('EOPNOTSUPP');
    expect(await errnoOf(p.fallocate(fd, 0, 0, 0))).toBe('EINVAL');
  });

  it('fails with ENOMEM and keeps nothing when fallocate asks for more than RAM', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('big');
    const before = await stats(p);
    expect(await errnoOf(p.fallocate(fd, 0, 0, 512 * MiB))).toBe('ENOMEM');
    expect(await p.lseek(fd, 0, SEEK_END)).toBe(0);
    expect((await stats(p)).pages).toEqual(before.pages);
  });
});

describe('memfd seals', () => {
  it('F_ADD_SEALS fails with EPERM on a memfd created without MFD_ALLOW_SEALING', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('x');
    expect(await errnoOf(p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW))).toBe('EPERM');
  });

  it('adds seals, refuses unknown bits with EINVAL, and nothing more after F_SEAL_SEAL (EPERM)', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('x', MFD_ALLOW_SEALING);
    expect(await errnoOf(p.fcntl(fd, F_ADD_SEALS, 0x40))).toBe('EINVAL');
    await p.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
    await p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SEAL);
    expect(await p.fcntl(fd, F_GET_SEALS)).toBe(F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    expect(await errnoOf(p.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE))).toBe('EPERM');
    expect(await errnoOf(p.fcntl(fd, F_ADD_SEALS, 0))).toBe('EPERM');
  });

  it('F_SEAL_SHRINK refuses shrinking with EPERM and allows growing', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('x', MFD_ALLOW_SEALING);
    await p.write(fd, pattern(100));
    await p.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
    expect(await errnoOf(p.ftruncate(fd, 50))).toBe('EPERM');
    await p.ftruncate(fd, 100);
    await p.ftruncate(fd, 200);
    await p.pwrite(fd, text('z'), 300);
    expect(await p.lseek(fd, 0, SEEK_END)).toBe(301);
  });

  it('F_SEAL_GROW refuses every growth with EPERM and allows writing inside and shrinking', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('x', MFD_ALLOW_SEALING);
    await p.write(fd, pattern(100));
    await p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW);
    expect(await errnoOf(p.ftruncate(fd, 101))).toBe('EPERM');
    expect(await errnoOf(p.pwrite(fd, text('abc'), 98))).toBe('EPERM');
    expect(await errnoOf(p.fallocate(fd, 0, 0, 101))).toBe('EPERM');
    expect(await errnoOf(p.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 101))).toBe('EPERM');
    expect(await p.pwrite(fd, text('ab'), 98)).toBe(2);
    await p.ftruncate(fd, 50);
    expect(await p.lseek(fd, 0, SEEK_END)).toBe(50);
  });

  it('F_SEAL_WRITE and F_SEAL_FUTURE_WRITE refuse writes and hole punching with EPERM, not resizing', async () => {
    for (const seal of [F_SEAL_WRITE, F_SEAL_FUTURE_WRITE]) {
      const p = await spawn();
      const fd = await p.memfdCreate('x', MFD_ALLOW_SEALING);
      await p.write(fd, pattern(100));
      await p.fcntl(fd, F_ADD_SEALS, seal);
      expect(await errnoOf(p.write(fd, text('a')))).toBe('EPERM');
      expect(await errnoOf(p.pwrite(fd, text('a'), 0))).toBe('EPERM');
      expect(
        await errnoOf(p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 10)),
      ).toBe('EPERM');
      await p.ftruncate(fd, 200);
      await p.ftruncate(fd, 10);
      expect(await p.pread(fd, 100, 0)).toEqual(pattern(10));
    }
  });

  it('F_SEAL_EXEC on an executable memfd brings the write seals with it', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('x', MFD_ALLOW_SEALING);
    await p.fcntl(fd, F_ADD_SEALS, F_SEAL_EXEC);
    expect(await p.fcntl(fd, F_GET_SEALS)).toBe(
      F_SEAL_EXEC | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE,
    );
  });

  it('F_GET_SEALS and F_ADD_SEALS on a file that is not a memfd fail with EINVAL', async () => {
    const p = await spawn();
    const fd = await p.open('/dev/null');
    expect(await errnoOf(p.fcntl(fd, F_GET_SEALS))).toBe('EINVAL');
    expect(await errnoOf(p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW))).toBe('EINVAL');
  });
});

describe('memfd large folios and mmap', () => {
  it('backs a 64 MiB memfd with 32 order-9 folios, 2 MiB aligned in RAM', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('big');
    await p.ftruncate(fd, 64 * MiB);
    const mapping = await p.mmap(fd, 64 * MiB);
    const folios = (await inode(p, fd)).folios;
    expect(folios).toHaveLength(32);
    expect(folios.every((f) => f.order === 9 && f.phys % (2 * MiB) === 0)).toBe(true);
    // The mapping shows exactly those frames at their file offsets; folios that follow each
    // other in RAM share one segment.
    for (const folio of folios) expect(physAt(mapping, folio.index * PAGE_SIZE)).toBe(folio.phys);
    expect(mapping.segments.reduce((n, s) => n + s.bytes.length, 0)).toBe(64 * MiB);
    expect(mapping.segments.length).toBeLessThanOrEqual(32);
  });

  it('uses the largest aligned folios that fit a small file', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('small');
    await p.write(fd, pattern(7 * PAGE_SIZE - 1));
    expect((await inode(p, fd)).folios.map((f) => [f.index, f.order])).toEqual([
      [0, 2],
      [4, 1],
      [6, 0],
    ]);
  });

  it('maps the very frames of the file: stores through the mapping are read by read(), and writes show in the mapping', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('map');
    await p.ftruncate(fd, 3 * MiB);
    const mapping = await p.mmap(fd, 3 * MiB);
    // 768 pages: an order-9 folio, then an order-8 one.
    expect((await inode(p, fd)).folios.map((f) => [f.index, f.order])).toEqual([
      [0, 9],
      [512, 8],
    ]);
    expect(mapping.segments.reduce((n, s) => n + s.bytes.length, 0)).toBe(3 * MiB);
    // A hole maps as zeros.
    expect(mapping.segments.every((s) => s.bytes.every((b) => b === 0))).toBe(true);
    bytesAt(mapping, 2 * MiB + 10, 19).set(text('through the mapping'));
    expect(await p.pread(fd, 19, 2 * MiB + 10)).toEqual(text('through the mapping'));
    await p.pwrite(fd, text('by write'), 5);
    expect(bytesAt(mapping, 5, 8)).toEqual(text('by write'));
    await p.munmap(mapping);
  });

  it('maps from a page-aligned offset, and refuses an unaligned one with EINVAL', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('off');
    await p.write(fd, pattern(4 * PAGE_SIZE));
    const mapping = await p.mmap(fd, PAGE_SIZE + 10, 2 * PAGE_SIZE);
    expect(mapping.segments.map((s) => s.bytes.length)).toEqual([PAGE_SIZE + 10]);
    expect(mapping.segments[0]!.bytes).toEqual(
      pattern(4 * PAGE_SIZE).subarray(2 * PAGE_SIZE, 3 * PAGE_SIZE + 10),
    );
    expect(await errnoOf(p.mmap(fd, PAGE_SIZE, 100))).toBe('EINVAL');
  });
});

describe('memfd release', () => {
  it('frees every frame when the last reference goes, a mapping included', async () => {
    const p = await spawn();
    const before = await stats(p);
    const fd = await p.memfdCreate('gone');
    await writeAll(p, fd, pattern(6 * MiB + 5));
    const mapping = await p.mmap(fd, PAGE_SIZE);
    const used = (await stats(p)).pages.allocated - before.pages.allocated;
    // 6 MiB in three order-9 folios, and one page for the last 5 bytes.
    expect(used).toBe(3 * 512 + 1);
    await p.close(fd);
    expect((await stats(p)).pages.allocated - before.pages.allocated).toBe(used);
    await p.munmap(mapping);
    expect((await stats(p)).pages).toEqual(before.pages);
  });

  it('keeps the memfd while a dup of its fd is open', async () => {
    const p = await spawn();
    const before = await stats(p);
    const fd = await p.memfdCreate('dup');
    await p.write(fd, pattern(PAGE_SIZE));
    const dup = await p.dup(fd);
    await p.close(fd);
    expect(await p.pread(dup, PAGE_SIZE, 0)).toEqual(pattern(PAGE_SIZE));
    await p.close(dup);
    expect((await stats(p)).pages).toEqual(before.pages);
  });

  it('frees the memfds of a process that exits', async () => {
    const machine = await bootedMachine(testImage('6.18.0', { luo: false }));
    const p = machine.spawn();
    const watcher = machine.spawn();
    const before = await stats(watcher);
    await p.write(await p.memfdCreate('a'), pattern(3 * MiB));
    await p.fallocate(await p.memfdCreate('b'), 0, 0, 5 * MiB);
    expect((await stats(watcher)).pages.allocated).toBe(before.pages.allocated + 8 * 256);
    await p.exit();
    expect((await stats(watcher)).pages).toEqual(before.pages);
  });
});

describe('memfd with MFD_HUGETLB', () => {
  it('is a working memfd', async () => {
    const p = await spawn();
    const fd = await p.memfdCreate('huge', MFD_HUGETLB | MFD_ALLOW_SEALING);
    await p.write(fd, text('huge'));
    expect(await p.pread(fd, 10, 0)).toEqual(text('huge'));
  });
});
