// The memfd-v2 handler called directly by the probe module, without LUO: its serializedData
// crosses the kexec in a KHO subtree of the probe's. This reaches what LUO never does on its own:
// damaged serialized data, and failures part way through preserve.
import { describe, expect, it } from 'vitest';
import {
  F_GET_SEALS,
  F_SEAL_GROW,
  F_SEAL_SHRINK,
  F_ADD_SEALS,
  MFD_ALLOW_SEALING,
  MFD_HUGETLB,
  PAGE_SIZE,
  SEEK_CUR,
  SEEK_END,
  type Machine,
  type Process,
} from '@liveupdate/machine';
import {
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_UPTODATE,
  memfdLuoFolioSer,
  memfdLuoSer,
  packPfnFlags,
  unpackPfnFlags,
} from '@liveupdate/plugin-memfd';
import {
  MiB,
  bootedMachine,
  errnoOf,
  expectBytes,
  inode,
  kexec,
  pattern,
  probe,
  readAll,
  stats,
  testImage,
  writeAll,
} from './helpers.js';

type Result<T = number> = { ok: T } | { errno: string };

interface SerView {
  pos: number;
  size: number;
  seals: number;
  flags: number;
  nrFolios: number;
  folios: { first: number; totalPages: number; flags: number; order: number };
}

const image = (version: string) => testImage(version, { luo: false, probeLayout: 'memfd-v2' });

async function boot(): Promise<{ machine: Machine; process: Process }> {
  const machine = await bootedMachine(image('6.18.0'));
  return { machine, process: machine.spawn() };
}

/** Preserve `fd` directly (with freeze), and kexec; returns a process of the new kernel. */
async function preserveAndKexec(machine: Machine, process: Process, fd: number): Promise<Process> {
  const preserved = await probe<Result<{ serializedData: number }>>(process, 'preserve', {
    fd,
    freeze: true,
  });
  expect(preserved).toHaveProperty('ok');
  return kexec(machine, process, image('6.18.1'));
}

const retrieve = (process: Process, args: object = { index: 0 }): Promise<Result> =>
  probe<Result>(process, 'retrieve', args);

// The handover is read and damaged from the host, in the machine's RAM: a module of the next
// kernel may read preserved memory only once it has restored it.

/** The address of the memfd_luo_ser of incoming entry `index`. */
async function serPhys(next: Process, index: number): Promise<number> {
  return (await probe<number[]>(next, 'incoming'))[index]!;
}

/** The memfd_luo_ser of incoming entry `index`, with numbers for bigints. */
async function peekSer(machine: Machine, next: Process, index = 0): Promise<SerView> {
  const ser = memfdLuoSer.decode(machine.memory.read(await serPhys(next, index), memfdLuoSer.size));
  return {
    ...ser,
    pos: Number(ser.pos),
    size: Number(ser.size),
    nrFolios: Number(ser.nrFolios),
    folios: { ...ser.folios, first: Number(ser.folios.first) },
  };
}

/** Overwrite `field` of the memfd_luo_ser of incoming entry `index` before it is retrieved. */
async function corrupt(
  machine: Machine,
  next: Process,
  { index, field, value }: { index: number; field: string; value: unknown },
): Promise<void> {
  const phys = await serPhys(next, index);
  const view = machine.memory.view(phys, memfdLuoSer.size);
  const ser = memfdLuoSer.decode(view) as unknown as Record<string, unknown>;
  ser[field] = typeof ser[field] === 'bigint' ? BigInt(value as number) : value;
  memfdLuoSer.encodeInto(view, 0, ser as unknown as ReturnType<typeof memfdLuoSer.decode>);
}

describe('the memfd-v2 handler, called directly', () => {
  it('brings contents, size, position and seals back on the same frames', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('cache', MFD_ALLOW_SEALING);
    const data = pattern(3 * MiB + 100, 4);
    await writeAll(process, fd, data);
    await process.lseek(fd, 1234);
    await process.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
    const frames = (await inode(process, fd)).folios;

    const next = await preserveAndKexec(machine, process, fd);
    const result = await retrieve(next);
    if (!('ok' in result)) throw new Error(`retrieve failed: ${result.errno}`);
    const memfd = result.ok;
    expectBytes(await readAll(next, memfd, data.length), data);
    expect(await next.lseek(memfd, 0, SEEK_END)).toBe(data.length);
    expect(await next.lseek(memfd, 0, SEEK_CUR)).toBe(data.length);
    expect(await next.fcntl(memfd, F_GET_SEALS)).toBe(F_SEAL_SHRINK | F_SEAL_GROW);
    expect((await inode(next, memfd)).folios).toEqual(frames);
    expect((await stats(next)).kho.unrestoredFolios).toBe(0);
  });

  it('records the position at freeze, not at preserve', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('pos');
    await process.write(fd, pattern(100));
    await process.lseek(fd, 10);
    expect(await probe(process, 'preserve', { fd })).toHaveProperty('ok');
    await process.lseek(fd, 42);
    expect(await probe(process, 'freezeAll')).toEqual({ ok: 1 });
    const next = await kexec(machine, process, image('6.18.1'));
    const { ok: memfd } = (await retrieve(next)) as { ok: number };
    expect(await next.lseek(memfd, 0, SEEK_CUR)).toBe(42);
  });

  it('fills holes with zeroed folios that tile the file, none crossing its end', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('sparse');
    const size = 2 * MiB + 5 * PAGE_SIZE + 1;
    await process.ftruncate(fd, size);
    await process.pwrite(fd, pattern(10), size - 10);
    const next = await preserveAndKexec(machine, process, fd);
    // Free pages were poisoned at boot: holes left unfilled would not read as zeros.
    const { ok: memfd } = (await retrieve(next)) as { ok: number };
    const expected = new Uint8Array(size);
    expected.set(pattern(10), size - 10);
    expectBytes(await readAll(next, memfd, size), expected);
    const folios = (await inode(next, memfd)).folios.map((f) => [f.index, f.order]);
    // The written tail spans pages 516 and 517, one order-1 folio; the hole before it is filled.
    expect(folios).toEqual([
      [0, 9],
      [512, 2],
      [516, 1],
    ]);
  });

  it('keeps an empty memfd without a folio array', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('empty');
    const next = await preserveAndKexec(machine, process, fd);
    expect(await peekSer(machine, next)).toMatchObject({
      size: 0,
      nrFolios: 0,
      folios: { first: 0, totalPages: 0, flags: 0, order: 0 },
    });
    const { ok: memfd } = (await retrieve(next)) as { ok: number };
    expect(await next.lseek(memfd, 0, SEEK_END)).toBe(0);
    await next.write(memfd, pattern(10));
    expect(await next.pread(memfd, 10, 0)).toEqual(pattern(10));
  });

  it('writes the documented memfd_luo_ser and memfd_luo_folio_ser values', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('abi');
    await process.write(fd, pattern(5 * PAGE_SIZE));
    const frames = (await inode(process, fd)).folios;
    const next = await preserveAndKexec(machine, process, fd);
    const ser = await peekSer(machine, next);
    expect(ser).toMatchObject({ pos: 5 * PAGE_SIZE, size: 5 * PAGE_SIZE, flags: 0, nrFolios: 2 });
    expect(ser.folios).toMatchObject({ totalPages: 1, flags: 1, order: 0 });
    // The chunk's phys[0] is the page holding the two entries.
    const chunk = machine.memory.read(ser.folios.first, 16);
    const view = new DataView(chunk.buffer, chunk.byteOffset);
    expect(view.getBigUint64(0, true)).toBe(0n);
    const array = Number(view.getBigUint64(8, true));
    const raw = machine.memory.read(array, 32);
    const entries = [0, 1].map((i) => memfdLuoFolioSer.decode(raw, i * 16));
    expect(entries.map((e) => unpackPfnFlags(e.pfnFlags))).toEqual(
      frames.map((f) => ({
        pfn: f.phys / PAGE_SIZE,
        flags: MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE,
      })),
    );
    expect(entries.map((e) => Number(e.index))).toEqual(frames.map((f) => f.index));
  });

  it('finish of a memfd never retrieved frees its frames and its serialized data', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('dropped');
    await writeAll(process, fd, pattern(4 * MiB));
    const next = await preserveAndKexec(machine, process, fd);
    const before = await stats(next);
    expect(before.kho.unrestoredFrames).toBeGreaterThan(4 * 256);
    expect(await probe(next, 'finish', { index: 0, retrieveStatus: 0 })).toEqual({ ok: 0 });
    const after = await stats(next);
    expect(after.kho.unrestoredFolios).toBe(0);
    expect(after.pages.free).toBe(before.pages.free + before.kho.unrestoredFrames);
  });

  it('finish after a retrieve leaves the retrieved memfd alone', async () => {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('kept');
    await process.write(fd, pattern(PAGE_SIZE));
    const next = await preserveAndKexec(machine, process, fd);
    const { ok: memfd } = (await retrieve(next)) as { ok: number };
    const before = await stats(next);
    expect(await probe(next, 'finish', { index: 0, retrieveStatus: 1 })).toEqual({ ok: 0 });
    expect(await stats(next)).toEqual(before);
    expect(await next.pread(memfd, PAGE_SIZE, 0)).toEqual(pattern(PAGE_SIZE));
  });

  it('unpreserve thaws the size and preserves nothing any more', async () => {
    const { process } = await boot();
    const fd = await process.memfdCreate('undo');
    await process.write(fd, pattern(3 * PAGE_SIZE));
    const before = await stats(process);
    expect(await probe(process, 'preserve', { fd })).toHaveProperty('ok');
    expect((await inode(process, fd)).frozen).toBe(true);
    expect(await errnoOf(process.ftruncate(fd, 0))).toBe('EPERM');
    expect(await probe(process, 'unpreserve', { index: 0 })).toEqual({ ok: 0 });
    expect((await inode(process, fd)).frozen).toBe(false);
    // The probe's own subtree blob is the only preserved page left.
    expect((await stats(process)).kho.preservedFolios).toBe(1);
    await process.ftruncate(fd, 0);
    await process.close(fd);
    // The memfd's 3 pages are gone; the probe's (now empty) list page stays.
    expect((await stats(process)).pages.allocated).toBe(before.pages.allocated - 3 + 1);
  });

  it('undoes everything when preserve runs out of memory filling holes', async () => {
    const { process } = await boot();
    const fd = await process.memfdCreate('sparse');
    await process.ftruncate(fd, 64 * MiB);
    await process.pwrite(fd, pattern(10), 0);
    await probe(process, 'exhaust', { leave: 8 * 256 });
    const before = await stats(process);
    expect(await probe(process, 'preserve', { fd })).toEqual({ errno: 'ENOMEM' });
    expect((await stats(process)).kho).toEqual(before.kho);
    expect((await inode(process, fd)).frozen).toBe(false);
    await probe(process, 'release');
    await process.ftruncate(fd, 10);
    expect(await process.pread(fd, 100, 0)).toEqual(pattern(10));
  });

  it('refuses to preserve a memfd with seals memfd-v2 does not know, with EOPNOTSUPP', async () => {
    const { process } = await boot();
    const fd = await process.memfdCreate('odd');
    await probe(process, 'setSeals', { fd, seals: 0x40 });
    const before = await stats(process);
    expect(await probe(process, 'preserve', { fd })).toEqual({ errno: 'EOPNOTSUPP' });
    expect(await stats(process)).toEqual(before);
    expect((await inode(process, fd)).frozen).toBe(false);
  });

  it('takes memfds but neither MFD_HUGETLB ones nor other files', async () => {
    const { process } = await boot();
    expect(await probe(process, 'canPreserve', { fd: await process.memfdCreate('a') })).toBe(true);
    const huge = await process.memfdCreate('h', MFD_HUGETLB);
    expect(await probe(process, 'canPreserve', { fd: huge })).toBe(false);
    expect(await probe(process, 'canPreserve', { fd: await process.open('/dev/null') })).toBe(
      false,
    );
  });

  it('gives every fd of one memfd the same id, and different memfds different ones', async () => {
    const { process } = await boot();
    const fd = await process.memfdCreate('a');
    const dup = await process.dup(fd);
    expect(await probe(process, 'sameId', { fds: [fd, dup] })).toBe(true);
    const other = await process.memfdCreate('b');
    expect(await probe(process, 'sameId', { fds: [fd, other] })).toBe(false);
  });
});

describe('the memfd-v2 handler refuses damaged serialized data', () => {
  /** A preserved 3-folio memfd (orders 9, 1, 0) in the kernel after the kexec. */
  async function preserved(): Promise<{ machine: Machine; next: Process; ser: SerView }> {
    const { machine, process } = await boot();
    const fd = await process.memfdCreate('victim');
    await writeAll(process, fd, pattern(2 * MiB + 3 * PAGE_SIZE));
    const next = await preserveAndKexec(machine, process, fd);
    return { machine, next, ser: await peekSer(machine, next) };
  }

  /** Where the folio array lives: the first run listed by the kho_vmalloc chunk. */
  function folioArray(machine: Machine, ser: SerView): number {
    return Number(machine.memory.readU64(ser.folios.first + 8));
  }

  it('refuses serializedData 0 or an address that holds no memfd_luo_ser with EINVAL', async () => {
    const { next } = await preserved();
    expect(await retrieve(next, { serializedData: 0 })).toEqual({ errno: 'EINVAL' });
    expect(await retrieve(next, { serializedData: 123 })).toEqual({ errno: 'EINVAL' });
    expect(await retrieve(next, { serializedData: 2 ** 40 })).toEqual({ errno: 'EINVAL' });
    // A page of RAM nobody preserved (firmware's).
    expect(await retrieve(next, { serializedData: PAGE_SIZE })).toEqual({ errno: 'EINVAL' });
    expect(await retrieve(next)).toHaveProperty('ok');
  });

  it('refuses unknown seals with EOPNOTSUPP and frees the frames', async () => {
    const { machine, next } = await preserved();
    const before = await stats(next);
    await corrupt(machine, next, { index: 0, field: 'seals', value: 0x40 });
    expect(await retrieve(next)).toEqual({ errno: 'EOPNOTSUPP' });
    const after = await stats(next);
    expect(after.kho.unrestoredFolios).toBe(0);
    expect(after.pages.free).toBe(before.pages.free + before.kho.unrestoredFrames);
  });

  it('refuses a non-zero flags field with EOPNOTSUPP', async () => {
    const { machine, next } = await preserved();
    await corrupt(machine, next, { index: 0, field: 'flags', value: 1 });
    expect(await retrieve(next)).toEqual({ errno: 'EOPNOTSUPP' });
  });

  it.each([
    ['a size too small for the folios', 'EINVAL', 'size', PAGE_SIZE],
    ['more folios than pages', 'EINVAL', 'nrFolios', 10_000],
    // The fourth entry is the zeros after the third: no flags, pfn 0.
    ['more folios than the array holds', 'EIO', 'nrFolios', 4],
  ])('refuses %s with %s', async (_what, errno, field, value) => {
    const { machine, next } = await preserved();
    await corrupt(machine, next, { index: 0, field, value });
    expect(await retrieve(next)).toEqual({ errno });
  });

  it('refuses a broken kho_vmalloc description with EINVAL', async () => {
    const { machine, next, ser } = await preserved();
    await corrupt(machine, next, {
      index: 0,
      field: 'folios',
      value: { ...ser.folios, first: BigInt(ser.folios.first + PAGE_SIZE) },
    });
    expect(await retrieve(next)).toEqual({ errno: 'EINVAL' });
  });

  it('refuses a folio whose place does not fit an aligned folio with EIO, restoring none', async () => {
    const { machine, next, ser } = await preserved();
    const array = folioArray(machine, ser);
    // Move the second folio (order 1 at page 512) to page 513.
    const entry = memfdLuoFolioSer.encode({ pfnFlags: 0n, index: 513n });
    machine.memory.write(array + 16 + 8, entry.subarray(8));
    expect(await retrieve(next)).toEqual({ errno: 'EIO' });
    // Only the memfd_luo_ser was taken (and freed); the folios, chunk and array page stay reserved.
    expect((await stats(next)).kho.unrestoredFolios).toBe(5);
  });

  it('fails with EIO when a folio cannot be restored, restoring none of the others', async () => {
    const { machine, next, ser } = await preserved();
    const array = folioArray(machine, ser);
    const raw = machine.memory.read(array, 48);
    // Point the order-0 folio (third entry) at the frame after it, which nobody preserved.
    const third = memfdLuoFolioSer.decode(raw, 32);
    const { pfn, flags } = unpackPfnFlags(third.pfnFlags);
    const moved = memfdLuoFolioSer.encode({
      pfnFlags: packPfnFlags(pfn + 1, flags),
      index: third.index,
    });
    machine.memory.write(array + 32, moved);
    const before = await stats(next);
    expect(await retrieve(next)).toEqual({ errno: 'EIO' });
    const after = await stats(next);
    // Only the memfd_luo_ser page was restored (and freed): a list with one wrong entry cannot be
    // trusted for the others, so its three folios, chunk and array page stay reserved.
    expect(after.kho.unrestoredFolios).toBe(before.kho.unrestoredFolios - 1);
    expect(after.kho.unrestoredFrames).toBe(before.kho.unrestoredFrames - 1);
    expect(after.pages.free).toBe(before.pages.free + 1);
  });

  it('refuses a damaged list at finish of a never-retrieved memfd too, freeing only its memfd_luo_ser', async () => {
    const { machine, next, ser } = await preserved();
    const array = folioArray(machine, ser);
    const pfnZero = memfdLuoFolioSer.encode({
      pfnFlags: packPfnFlags(0, MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE),
      index: 0n,
    });
    machine.memory.write(array + 16, pfnZero.subarray(0, 8));
    const before = await stats(next);
    expect(await probe(next, 'finish', { index: 0, retrieveStatus: 0 })).toEqual({ errno: 'EIO' });
    expect(machine.dmesg(1)).toMatch(
      /memfd: memfd_luo_ser at 0x[0-9a-f]+: memfd_luo_folio_ser\[1\]: pfn 0 \(finish in session "memfd-probe"\); the folios it lists \(nr_folios 3\) stay reserved/,
    );
    const after = await stats(next);
    expect(after.kho.unrestoredFolios).toBe(before.kho.unrestoredFolios - 1);
    expect(after.pages.free).toBe(before.pages.free + 1);
  });

  it('names every frame it claims without restoring any', async () => {
    const { machine, next, ser } = await preserved();
    const array = folioArray(machine, ser);
    const serPhys = (await probe<number[]>(next, 'incoming'))[0]!;
    const raw = machine.memory.read(array, 48);
    const folios = [0, 1, 2].map((i) => {
      const entry = memfdLuoFolioSer.decode(raw, i * 16);
      return unpackPfnFlags(entry.pfnFlags).pfn;
    });
    const before = await stats(next);
    const claimed = await probe<{ ok: { pfn: number; frames: number }[] }>(
      next,
      'preservedFrames',
      {
        index: 0,
      },
    );
    expect(claimed.ok).toEqual([
      { pfn: serPhys / PAGE_SIZE, frames: 1 },
      { pfn: ser.folios.first / PAGE_SIZE, frames: 1 },
      { pfn: array / PAGE_SIZE, frames: 1 },
      { pfn: folios[0], frames: 512 },
      { pfn: folios[1], frames: 2 },
      { pfn: folios[2], frames: 1 },
    ]);
    expect(await stats(next)).toEqual(before);
    expect(await retrieve(next)).toHaveProperty('ok');
  });
});
