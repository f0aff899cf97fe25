// memfd-v3 and memfd-v2 across live updates between kernels that read different layouts: the
// bytes each handover really holds (read raw between the kernels), what the next kernel gets
// back, and the conversion freeze makes when the loaded kernel changed after preserve.
import {
  errnoOf,
  injectFault,
  clearFault,
  liveUpdateImage,
  rawLuoHandover,
} from '@liveupdate/testkit';
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice, type LiveUpdateSession } from '@liveupdate/core';
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_GROW,
  F_SEAL_SHRINK,
  LINUX_REBOOT_CMD_KEXEC,
  MFD_ALLOW_SEALING,
  PAGE_SIZE,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
  type HandoverEvent,
  type KernelImage,
  type PhysicalMemory,
  type Process,
} from '@liveupdate/machine';
import {
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_UPTODATE,
  memfdLuoFolioSer,
  memfdLuoRunSer,
  memfdLuoSer,
  memfdLuoSerV3,
  unpackPfnFlags,
} from '@liveupdate/plugin-memfd';
import {
  MEMFD_MODULE,
  MEMFD_V2_MODULE,
  MiB,
  PROBE,
  bootedMachine,
  expectBytes,
  inode,
  pattern,
  readAll,
  stats,
  writeAll,
  type InodeView,
} from './helpers.js';

/** A kernel with LUO, the testkit's module (fault injection on), a memfd module and the probe. */
const image = (version: string, memfd: string = MEMFD_MODULE): KernelImage =>
  liveUpdateImage({
    version,
    modules: [memfd, PROBE],
    cmdline: 'liveupdate.fault_injection=on',
    moduleBase: import.meta.url,
  });
const V3_KERNEL = (version = '6.19.0') => image(version);
const V2_KERNEL = (version = '6.18.0') => image(version, MEMFD_V2_MODULE);

/** One folio as a handover names it: its first page in the file, its frame and its order. */
interface HandedFolio {
  readonly index: number;
  readonly pfn: number;
  readonly order: number;
}

/** A preserved memfd as one handover holds it, decoded with the codecs alone. */
interface HandedFile {
  readonly token: bigint;
  readonly compatible: string;
  readonly size: bigint;
  readonly pos: bigint;
  readonly seals: number;
  /** Entries as written: runs (memfd-v3) or folios (memfd-v2). */
  readonly entries: number;
  /** The folios the entries name, expanded. */
  readonly folios: HandedFolio[];
  /** memfd-v3 only: each run as written. */
  readonly runs: ReturnType<typeof memfdLuoRunSer.decode>[];
}

/** The one page of entries a `kho_vmalloc` of one page describes (`phys[0]` of its chunk). */
function arrayPage(
  memory: PhysicalMemory,
  array: { first: bigint; totalPages: number },
): Uint8Array {
  expect(array.totalPages).toBe(1);
  return memory.read(Number(memory.readU64(Number(array.first) + 8)), PAGE_SIZE);
}

/** Every memfd of session `name` in the handover, decoded raw. */
function handedFiles(memory: PhysicalMemory, khoFdtPhys: number, name: string): HandedFile[] {
  const session = rawLuoHandover(memory, khoFdtPhys).sessions.find(
    (s) => new TextDecoder().decode(s.entry.name).replace(/\0+$/, '') === name,
  );
  if (!session) throw new Error(`no session "${name}" in the handover`);
  return session.files.map(({ entry }): HandedFile => {
    const data = Number(entry.data);
    if (entry.compatible === 'memfd-v3') {
      const ser = memfdLuoSerV3.decode(memory.read(data, memfdLuoSerV3.size));
      const page = ser.nrRuns === 0n ? new Uint8Array(0) : arrayPage(memory, ser.runs);
      const runs = Array.from({ length: Number(ser.nrRuns) }, (_, i) =>
        memfdLuoRunSer.decode(page, i * memfdLuoRunSer.size),
      );
      const folios = runs.flatMap((run) =>
        Array.from({ length: run.nrFolios }, (_, k) => ({
          index: Number(run.index) + k * 2 ** run.order,
          pfn: Number(run.pfn) + k * 2 ** run.order,
          order: run.order,
        })),
      );
      return {
        ...ser,
        token: entry.token,
        compatible: entry.compatible,
        entries: runs.length,
        folios,
        runs,
      };
    }
    expect(entry.compatible).toBe('memfd-v2');
    const ser = memfdLuoSer.decode(memory.read(data, memfdLuoSer.size));
    const count = Number(ser.nrFolios);
    const page = count === 0 ? new Uint8Array(0) : arrayPage(memory, ser.folios);
    const raw = Array.from({ length: count }, (_, i) => {
      const e = memfdLuoFolioSer.decode(page, i * memfdLuoFolioSer.size);
      return { ...unpackPfnFlags(e.pfnFlags), index: Number(e.index) };
    });
    const end = Math.ceil(Number(ser.size) / PAGE_SIZE);
    const folios = raw.map(({ pfn, index }, i) => ({
      index,
      pfn,
      order: Math.log2((raw[i + 1]?.index ?? end) - index),
    }));
    return {
      ...ser,
      token: entry.token,
      compatible: entry.compatible,
      entries: count,
      folios,
      runs: [],
    };
  });
}

/** A memfd as the test made it in the old kernel. */
interface Made {
  readonly token: bigint;
  readonly data: Uint8Array;
  readonly pos: number;
  readonly seals: number;
  readonly folios: InodeView['folios'];
}

/** A sealed memfd of `size` bytes of pattern `seed`, position `pos`, to be preserved as `token`. */
async function make(process: Process, token: bigint, size: number, seed: number) {
  const fd = await process.memfdCreate(`memfd-${seed}`, MFD_ALLOW_SEALING);
  const data = pattern(size, seed);
  await writeAll(process, fd, data);
  await process.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
  const pos = 1000 + seed;
  await process.lseek(fd, pos, SEEK_SET);
  return { fd, token, data, pos, seals: F_SEAL_SHRINK | F_SEAL_GROW };
}

/** Preserve what {@link make} made; its folios are read once preserve has filled the holes. */
async function preserve(
  process: Process,
  session: LiveUpdateSession,
  memfd: Awaited<ReturnType<typeof make>>,
): Promise<Made> {
  await session.preserveFd(memfd.fd, memfd.token);
  return { ...memfd, folios: (await inode(process, memfd.fd)).folios };
}

const makeAndPreserve = async (
  process: Process,
  session: LiveUpdateSession,
  token: bigint,
  size: number,
  seed: number,
): Promise<Made> => preserve(process, session, await make(process, token, size, seed));

/**
 * Retrieve `made` in the new kernel and check its bytes, size, position and seals, and that it is
 * on the same frames; returns its fd, at the position it came with.
 */
async function expectRetrieved(
  next: Process,
  session: LiveUpdateSession,
  made: Made,
): Promise<number> {
  const fd = await session.retrieveFd(made.token);
  expect(await next.fcntl(fd, F_GET_SEALS)).toBe(made.seals);
  expect(await next.lseek(fd, 0, SEEK_CUR)).toBe(made.pos);
  expect(await next.lseek(fd, 0, SEEK_END)).toBe(made.data.length);
  await next.lseek(fd, made.pos, SEEK_SET);
  expectBytes(await readAll(next, fd, made.data.length), made.data);
  expect((await inode(next, fd)).folios).toEqual(made.folios);
  return fd;
}

/** The folios of `made` as a handover names them. */
const handed = (made: Made): HandedFolio[] =>
  made.folios.map(({ index, phys, order }) => ({ index, pfn: phys / PAGE_SIZE, order }));

/**
 * Boot `first`, make memfds in session "vm0" with `setup`, then reboot into `next` (kexec_load'ed
 * by `setup` or here), capturing the handover of "vm0".
 */
async function liveUpdate<T>(
  first: KernelImage,
  setup: (ctx: { process: Process; session: LiveUpdateSession }) => Promise<T>,
  next?: KernelImage,
): Promise<{
  made: T;
  /** The handover of "vm0" at the last kexec. */
  files: () => HandedFile[];
  next: Process;
  dmesg: (boot: number) => string;
}> {
  let files: HandedFile[] = [];
  const onHandover = ({ memory, khoFdtPhys }: HandoverEvent): void => {
    files = handedFiles(memory, khoFdtPhys!, 'vm0');
  };
  const machine = await bootedMachine(first, onHandover);
  const process = machine.spawn();
  const device = await LiveUpdateDevice.open(process);
  const session = await device.createSession('vm0');
  const made = await setup({ process, session });
  if (next) await process.kexecLoad(next);
  await process.reboot(LINUX_REBOOT_CMD_KEXEC);
  return { made, files: () => files, next: machine.spawn(), dmesg: (boot) => machine.dmesg(boot) };
}

const FLAGS = MEMFD_LUO_FOLIO_DIRTY | MEMFD_LUO_FOLIO_UPTODATE;

describe('memfd-v3', () => {
  it('lists folios contiguous in the file and in memory as one run, and brings the memfd back', async () => {
    const { made, files, next } = await liveUpdate(
      V3_KERNEL('6.19.0'),
      // Four order-9 folios from a fresh allocator, then order 1 and order 0 for the last pages.
      ({ process, session }) => makeAndPreserve(process, session, 1n, 8 * MiB + 3 * PAGE_SIZE, 1),
      V3_KERNEL('6.19.1'),
    );
    expect(made.folios.map((f) => f.order)).toEqual([9, 9, 9, 9, 1, 0]);
    const [file] = files();
    expect(file!.compatible).toBe('memfd-v3');
    expect(file!.size).toBe(BigInt(made.data.length));
    expect(file!.pos).toBe(BigInt(made.pos));
    expect(file!.seals).toBe(made.seals);
    // The runs name exactly the file's folios, in fewer entries, none of which could be merged.
    expect(file!.folios).toEqual(handed(made));
    expect(file!.entries).toBeLessThan(made.folios.length);
    expect(file!.runs.every((run) => run.flags === FLAGS && run.nrFolios > 0)).toBe(true);
    file!.runs.slice(1).forEach((run, i) => {
      const previous = file!.runs[i]!;
      const span = BigInt(previous.nrFolios * 2 ** previous.order);
      const mergeable =
        run.order === previous.order &&
        run.index === previous.index + span &&
        run.pfn === previous.pfn + span;
      expect(mergeable).toBe(false);
    });
    const session = await (await LiveUpdateDevice.open(next)).retrieveSession('vm0');
    await expectRetrieved(next, session, made);
  });

  it('keeps an empty memfd with no runs', async () => {
    const { made, files, next } = await liveUpdate(
      V3_KERNEL(),
      ({ process, session }) => makeAndPreserve(process, session, 1n, 0, 2),
      V3_KERNEL('6.19.1'),
    );
    expect(files()[0]).toMatchObject({ compatible: 'memfd-v3', size: 0n, entries: 0 });
    const session = await (await LiveUpdateDevice.open(next)).retrieveSession('vm0');
    const fd = await session.retrieveFd(made.token);
    expect(await next.lseek(fd, 0, SEEK_END)).toBe(0);
  });
});

describe('memfd between kernels that read different layouts', () => {
  it('writes memfd-v2 at preserve for a loaded kernel that reads only memfd-v2, which retrieves it', async () => {
    const { made, files, next, dmesg } = await liveUpdate(
      V3_KERNEL(),
      async ({ process, session }) => {
        await process.kexecLoad(V2_KERNEL());
        return makeAndPreserve(process, session, 1n, 4 * MiB + PAGE_SIZE, 3);
      },
    );
    expect(files()[0]!.compatible).toBe('memfd-v2');
    expect(files()[0]!.entries).toBe(made.folios.length);
    expect(files()[0]!.folios).toEqual(handed(made));
    // Written so at preserve: freeze had nothing to convert.
    expect(dmesg(0)).not.toMatch(/rewritten from/);
    const session = await (await LiveUpdateDevice.open(next)).retrieveSession('vm0');
    await expectRetrieved(next, session, made);
  });

  it('takes memfd-v2 from the 6.18.0 plugin, and writes memfd-v3 on the next update', async () => {
    const { made, files, next } = await liveUpdate(
      V2_KERNEL(),
      ({ process, session }) => makeAndPreserve(process, session, 1n, 2 * MiB + 5 * PAGE_SIZE, 4),
      V3_KERNEL(),
    );
    expect(files()[0]!.compatible).toBe('memfd-v2');
    expect(files()[0]!.folios).toEqual(handed(made));
    const device = await LiveUpdateDevice.open(next);
    const incoming = await device.retrieveSession('vm0');
    const fd = await expectRetrieved(next, incoming, made);
    await incoming.finish();
    // The retrieved memfd, preserved again by the memfd-v3 kernel, crosses as memfd-v3.
    const outgoing = await device.createSession('vm0');
    await outgoing.preserveFd(fd, made.token);
    await next.kexecLoad(V3_KERNEL('6.19.1'));
    await next.reboot(LINUX_REBOOT_CMD_KEXEC);
    expect(files()[0]!.compatible).toBe('memfd-v3');
    expect(files()[0]!.folios).toEqual(handed(made));
  });

  it('converts at freeze when a kernel that reads only memfd-v2 is loaded after preserve', async () => {
    const { made, files, next, dmesg } = await liveUpdate(
      V3_KERNEL(),
      ({ process, session }) => makeAndPreserve(process, session, 1n, 4 * MiB + 3 * PAGE_SIZE, 5),
      V2_KERNEL(),
    );
    expect(dmesg(0)).toMatch(/memfd: inode \d+ rewritten from memfd-v3 to memfd-v2/);
    expect(files()[0]!.compatible).toBe('memfd-v2');
    expect(files()[0]!.folios).toEqual(handed(made));
    const session = await (await LiveUpdateDevice.open(next)).retrieveSession('vm0');
    await expectRetrieved(next, session, made);
  });
});

describe('a conversion at freeze, then an aborted reboot', () => {
  /**
   * Two memfds preserved as memfd-v3, a memfd-v2 kernel loaded, and the second freeze failed on
   * purpose: the first memfd was converted to memfd-v2 before the reboot gave up.
   */
  async function abortedAfterConversion(onHandover?: (event: HandoverEvent) => void) {
    const machine = await bootedMachine(V3_KERNEL(), onHandover);
    const process = machine.spawn();
    const memfds = [
      await make(process, 1n, 2 * MiB + 3 * PAGE_SIZE, 6),
      await make(process, 2n, 3 * PAGE_SIZE, 7),
    ];
    const before = await stats(process);
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession('vm0');
    const made: Made[] = [];
    for (const memfd of memfds) made.push(await preserve(process, session, memfd));
    await process.kexecLoad(V2_KERNEL());
    await injectFault(process, { compatible: 'memfd-v3', op: 'freeze', nth: 2, errno: 'EAGAIN' });
    expect(await errnoOf(process.reboot(LINUX_REBOOT_CMD_KEXEC))).toBe('EAGAIN');
    expect(machine.dmesg(0)).toMatch(/memfd: inode \d+ rewritten from memfd-v3 to memfd-v2/);
    await clearFault(process);
    return { machine, process, before, session, made };
  }

  it('leaves nothing preserved or pinned once the session is closed', async () => {
    const { process, before, session } = await abortedAfterConversion();
    await session.close();
    // Both layouts' memfd_luo_ser pages and arrays freed, nothing preserved or pinned: as before.
    expect(await stats(process)).toEqual(before);
  });

  it('writes memfd-v3 again when a memfd-v3 kernel is loaded instead, which retrieves both', async () => {
    let files: HandedFile[] = [];
    const { machine, process, made } = await abortedAfterConversion(({ memory, khoFdtPhys }) => {
      files = handedFiles(memory, khoFdtPhys!, 'vm0');
    });
    await process.kexecLoad(V3_KERNEL('6.19.1'));
    await process.reboot(LINUX_REBOOT_CMD_KEXEC);
    expect(files.map((f) => f.compatible)).toEqual(['memfd-v3', 'memfd-v3']);
    expect(files.map((f) => f.folios)).toEqual(made.map(handed));
    const next = machine.spawn();
    const session = await (await LiveUpdateDevice.open(next)).retrieveSession('vm0');
    for (const memfd of made) await expectRetrieved(next, session, memfd);
  });
});
