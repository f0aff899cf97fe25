import { describe, expect, it } from 'vitest';
import {
  F_GET_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  PAGE_SIZE,
} from '@liveupdate/machine';
import { MappedMemfd } from '../src/index.js';
import { MiB, bootedMachine, errnoOf, testImage } from './helpers.js';

describe('MappedMemfd', () => {
  it('creates a sealed memfd, maps it, and reads and writes across its segments', async () => {
    const process = (await bootedMachine(testImage('6.18.0', { luo: false }))).spawn();
    const seals = F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL;
    const memfd = await MappedMemfd.create(process, 'ram', 4 * MiB, { seals });
    expect(await process.fcntl(memfd.fd, F_GET_SEALS)).toBe(seals);
    expect(await errnoOf(process.ftruncate(memfd.fd, 8 * MiB))).toBe('EPERM');
    // Across the boundary of the first 2 MiB folio, whatever RAM the two folios sit in.
    const data = Uint8Array.from({ length: 3 * PAGE_SIZE }, (_, i) => (i * 5 + 1) & 0xff);
    const at = 2 * MiB - PAGE_SIZE - 7;
    memfd.write(at, data);
    expect(memfd.read(at, data.length)).toEqual(data);
    // The bytes are the file's: pread through the kernel sees them.
    expect(await process.pread(memfd.fd, data.length, at)).toEqual(data);
    expect(memfd.slices(at, data.length).reduce((n, s) => n + s.length, 0)).toBe(data.length);
    expect(() => memfd.read(4 * MiB - 4, 8)).toThrow(RangeError);
  });

  it('maps an fd the process already has, at its full size, and gives live views', async () => {
    const process = (await bootedMachine(testImage('6.18.0', { luo: false }))).spawn();
    const fd = await process.memfdCreate('plain');
    await process.ftruncate(fd, 3 * PAGE_SIZE);
    await process.pwrite(fd, Uint8Array.from([1, 2, 3, 4]), PAGE_SIZE);
    const memfd = await MappedMemfd.map(process, fd);
    expect(memfd.size).toBe(3 * PAGE_SIZE);
    const view = memfd.view(PAGE_SIZE, 4);
    expect(view.getUint32(0, true)).toBe(0x04030201);
    view.setUint8(0, 9);
    expect(await process.pread(fd, 1, PAGE_SIZE)).toEqual(Uint8Array.from([9]));
    await memfd.unmap();
    expect(await process.pread(fd, 4, PAGE_SIZE)).toEqual(Uint8Array.from([9, 2, 3, 4]));
  });
});
