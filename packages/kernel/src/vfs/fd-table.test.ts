import { describe, expect, it } from 'vitest';
import { O_RDWR } from '@liveupdate/machine';
import { FdTable, NR_OPEN_DEFAULT } from './fd-table.js';
import { File } from './file.js';
import { errnoOf } from '../../test/errno-of.js';

const newFile = (name = 'f'): File => new File(`/dev/${name}`, {}, O_RDWR);

describe('FdTable', () => {
  it('installs each file at the lowest free fd, reusing closed ones', () => {
    const table = new FdTable();
    const [a, b, c, d, e] = ['a', 'b', 'c', 'd', 'e'].map(newFile) as [
      File,
      File,
      File,
      File,
      File,
    ];
    expect(table.install(a, false)).toBe(0);
    expect(table.install(b, false)).toBe(1);
    expect(table.install(c, false)).toBe(2);
    expect(table.remove(1)).toBe(b);
    expect(table.install(d, false)).toBe(1);
    expect(table.install(e, false)).toBe(3);
    expect(table.get(0)).toBe(a);
    expect(table.get(1)).toBe(d);
    expect(table.get(3)).toBe(e);
    expect(table.size).toBe(4);
  });

  it('starts the search at minFd when given one (F_DUPFD)', () => {
    const table = new FdTable();
    const file = newFile();
    expect(table.install(file, false, 10)).toBe(10);
    expect(table.install(file, false, 10)).toBe(11);
    expect(table.install(file, false)).toBe(0);
    expect(table.size).toBe(3);
  });

  it(`fails with EMFILE once all ${NR_OPEN_DEFAULT} fds are taken, and recovers when one closes`, () => {
    expect(NR_OPEN_DEFAULT).toBe(1024);
    const table = new FdTable();
    const file = newFile();
    for (let fd = 0; fd < 1024; fd++) expect(table.install(file, false)).toBe(fd);
    expect(errnoOf(() => table.install(file, false))).toBe('EMFILE');
    expect(table.size).toBe(1024);
    table.remove(500);
    expect(table.install(file, true)).toBe(500);
    expect(errnoOf(() => table.install(file, false))).toBe('EMFILE');
  });

  it('fails with EMFILE when no fd at or above minFd is free', () => {
    const table = new FdTable();
    const file = newFile();
    expect(table.install(file, false, 1023)).toBe(1023);
    expect(errnoOf(() => table.install(file, false, 1023))).toBe('EMFILE');
    expect(errnoOf(() => table.install(file, false, 1024))).toBe('EMFILE');
    expect(table.install(file, false, 1000)).toBe(1000);
  });

  it.each([3, -1, 1.5, Number.NaN, 1024, 1e9])(
    'fails with EBADF for fd %s that is not open',
    (fd) => {
      const table = new FdTable();
      for (let i = 0; i < 3; i++) table.install(newFile(), false);
      expect(errnoOf(() => table.get(fd))).toBe('EBADF');
      expect(errnoOf(() => table.remove(fd))).toBe('EBADF');
      expect(errnoOf(() => table.cloexec(fd))).toBe('EBADF');
      expect(errnoOf(() => table.setCloexec(fd, true))).toBe('EBADF');
      expect(table.size).toBe(3);
    },
  );

  it('fails with EBADF for an fd that was closed', () => {
    const table = new FdTable();
    const fd = table.install(newFile(), false);
    table.remove(fd);
    expect(errnoOf(() => table.get(fd))).toBe('EBADF');
    expect(errnoOf(() => table.remove(fd))).toBe('EBADF');
  });

  it('keeps a close-on-exec flag per fd that can be changed and is not inherited by a reused fd', () => {
    const table = new FdTable();
    const file = newFile();
    const a = table.install(file, true);
    const b = table.install(file, false);
    expect(table.cloexec(a)).toBe(true);
    expect(table.cloexec(b)).toBe(false);
    table.setCloexec(a, false);
    table.setCloexec(b, true);
    expect(table.cloexec(a)).toBe(false);
    expect(table.cloexec(b)).toBe(true);
    table.remove(b);
    expect(table.install(file, false)).toBe(b);
    expect(table.cloexec(b)).toBe(false);
  });

  it('removeAll hands back every open file in fd order and empties the table', () => {
    const table = new FdTable();
    const files = ['a', 'b', 'c', 'd'].map(newFile);
    for (const file of files) table.install(file, false);
    table.remove(1);
    expect(table.removeAll()).toEqual([files[0], files[2], files[3]]);
    expect(table.size).toBe(0);
    expect(errnoOf(() => table.get(0))).toBe('EBADF');
    expect(table.install(files[1]!, false)).toBe(0);
    expect(new FdTable().removeAll()).toEqual([]);
  });

  it('reserves an fd that is not open until filled, and gives it back unfilled', () => {
    const table = new FdTable();
    const file = newFile();
    const fd = table.reserve(true);
    expect(fd).toBe(0);
    expect(errnoOf(() => table.get(fd))).toBe('EBADF');
    expect(table.size).toBe(0);
    // A reserved fd is taken: the next install goes elsewhere.
    expect(table.install(newFile(), false)).toBe(1);
    table.fill(fd, file);
    expect(table.get(fd)).toBe(file);
    expect(table.cloexec(fd)).toBe(true);
    expect(errnoOf(() => table.fill(fd, newFile()))).toBe('EBADF');
    const other = table.reserve(false);
    table.unreserve(other);
    expect(table.install(newFile(), false)).toBe(other);
  });
});
