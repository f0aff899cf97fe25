import { afterEach, expect } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { createKernelImage, type PageStats } from '@liveupdate/kernel';
import { sealLuoHandover } from '@liveupdate/testkit';
import {
  LINUX_REBOOT_CMD_KEXEC,
  Machine,
  PAGE_SIZE,
  type MachineOptions,
  type HandoverEvent,
  type KernelImage,
  type MemoryMapping,
  type Process,
} from '@liveupdate/machine';

export const MiB = 1024 * 1024;

/** The live bytes of a mapping at file offset `offset` (within one segment). */
export function bytesAt(mapping: MemoryMapping, offset: number, length: number): Uint8Array {
  const segment = mapping.segments.find(
    (s) => s.offset <= offset && offset + length <= s.offset + s.bytes.length,
  );
  if (!segment) throw new Error(`no segment holds bytes ${offset}+${length}`);
  return segment.bytes.subarray(offset - segment.offset, offset - segment.offset + length);
}

/** The physical address a mapping gives file offset `offset`. */
export function physAt(mapping: MemoryMapping, offset: number): number {
  const segment = mapping.segments.find(
    (s) => s.offset <= offset && offset < s.offset + s.bytes.length,
  );
  if (!segment) throw new Error(`no segment holds offset ${offset}`);
  return segment.phys + offset - segment.offset;
}
/** Room for a 64 MiB memfd beside the firmware megabyte and the KHO scratch area. */
export const TEST_RAM = 128 * MiB;
/** The memfd module, by its package name, as a kernel image lists it: memfd-v3, reads v2. */
export const MEMFD_MODULE = '@liveupdate/plugin-memfd';
/** The memfd module as shipped in 6.18.0: reads and writes memfd-v2 only. */
export const MEMFD_V2_MODULE = '@liveupdate/plugin-memfd/memfd-v2';
export const LUO_MODULE = '@liveupdate/core/module';
export const PROBE = new URL('./fixtures/memfd-probe.js', import.meta.url).href;
export const POISON = 0xaa;

export interface TestImageOptions {
  /** Load LUO (default true). */
  readonly luo?: boolean;
  /** The memfd module to list (default {@link MEMFD_MODULE}). */
  readonly memfd?: string;
  /** The layout the probe's own handler writes and reads (default its newest, memfd-v3). */
  readonly probeLayout?: string;
  /** Rehearse a live update when the image is loaded (`createKernelImage({ rehearse })`). */
  readonly rehearse?: boolean;
}

/** A kernel with a memfd module and the probe; LUO too unless `luo: false`. */
export function testImage(version: string, options: TestImageOptions = {}): KernelImage {
  const luo = options.luo ?? true;
  const cmdline = [
    'kho=on',
    ...(luo ? ['liveupdate=on'] : []),
    'page_poison=on',
    ...(options.probeLayout ? [`memfd_probe.layout=${options.probeLayout}`] : []),
  ].join(' ');
  return createKernelImage({
    version,
    cmdline,
    modules: [...(luo ? [LUO_MODULE] : []), options.memfd ?? MEMFD_MODULE, PROBE],
    moduleBase: import.meta.url,
    rehearse: options.rehearse ?? false,
  });
}

const machines: Machine[] = [];
afterEach(async () => {
  await Promise.all(machines.splice(0).map((m) => m.shutdown()));
});

/**
 * A machine booted with `image`, shut down after the test; `onHandover` runs between kernels (see
 * `Machine.create`), the place to damage a handover.
 */
export async function bootedMachine(
  image: KernelImage,
  onHandover?: MachineOptions['onHandover'],
): Promise<Machine> {
  const machine = Machine.create({ ramBytes: TEST_RAM, ...(onHandover ? { onHandover } : {}) });
  machines.push(machine);
  await machine.boot(image);
  return machine;
}

/** kexec_load `image` from `process`, reboot into it, and return a process of the new kernel. */
export async function kexec(
  machine: Machine,
  process: Process,
  image: KernelImage,
): Promise<Process> {
  await process.kexecLoad(image);
  await process.reboot(LINUX_REBOOT_CMD_KEXEC);
  return machine.spawn();
}

export interface Stats {
  pages: PageStats;
  kho: {
    preservedFolios: number;
    preservedFrames: number;
    unrestoredFolios: number;
    unrestoredFrames: number;
    unclaimedFolios: number;
    unclaimedFrames: number;
  };
  pinnedFrames: number;
}

export interface InodeView {
  id: number;
  size: number;
  seals: number;
  frozen: boolean;
  folios: { index: number; order: number; phys: number }[];
}

/** Call the probe module. */
export function probe<T = unknown>(process: Process, op: string, args: object = {}): Promise<T> {
  return process.syscall('memfd_probe', op, args) as Promise<T>;
}

export const stats = (process: Process): Promise<Stats> => probe<Stats>(process, 'stats');
export const inode = (process: Process, fd: number): Promise<InodeView> =>
  probe<InodeView>(process, 'inode', { fd });

/** A recognisable byte pattern: a function of the seed and the offset. */
export function pattern(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 7 + (i >>> 12)) & 0xff;
  return out;
}

/** Byte equality without vitest's element-by-element diff, which is slow on megabytes. */
export function expectBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  const same = Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(
    Buffer.from(expected.buffer, expected.byteOffset, expected.length),
  );
  expect(same, 'bytes differ').toBe(true);
}

/** Read the whole memfd with pread, in pieces the syscall channel carries comfortably. */
export async function readAll(process: Process, fd: number, size: number): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  const step = 16 * MiB;
  for (let at = 0; at < size; at += step) {
    out.set(await process.pread(fd, Math.min(step, size - at), at), at);
  }
  return out;
}

/** Write `data` at `offset` with pwrite, in pieces. */
export async function writeAll(
  process: Process,
  fd: number,
  data: Uint8Array,
  offset = 0,
): Promise<void> {
  const step = 16 * MiB;
  for (let at = 0; at < data.length; at += step) {
    const piece = data.subarray(at, Math.min(data.length, at + step));
    expect(await process.pwrite(fd, piece, offset + at)).toBe(piece.length);
  }
}

export { errnoOf } from '@liveupdate/testkit';

/** A preserved memfd as a damaged-handover test knows it from the old kernel. */
export interface PreservedMemfdView {
  readonly session: string;
  readonly token: bigint;
  readonly data: Uint8Array;
  readonly folios: InodeView['folios'];
}

/** The three memfds of {@link liveUpdateDamaged}. */
export interface DamagedScenario {
  readonly victim: PreservedMemfdView;
  readonly bystander: PreservedMemfdView;
  readonly other: PreservedMemfdView;
}

/** Frames of all the folios of `memfd`. */
export const frameCount = (memfd: PreservedMemfdView): number =>
  memfd.folios.reduce((n, f) => n + 2 ** f.order, 0);

/**
 * Three memfds: the victim (token 1, `victimSize` bytes) and a bystander (token 2, 5 pages) in
 * session "vm0", and another (token 1, 2 MiB + 3 pages) in "vm1", preserved in a kernel with the
 * memfd module `memfd`; then a kexec into another such kernel, `damage` running on the handover
 * between them. LUO's checksums would refuse the damage first, so the handover is resealed after
 * it: what is tested is memfd's reader.
 */
export async function liveUpdateDamaged(options: {
  readonly memfd: string;
  readonly victimSize: number;
  readonly damage: (event: HandoverEvent, memfds: DamagedScenario) => void;
}): Promise<DamagedScenario & { next: Process; dmesg: () => string }> {
  const preserved: { memfds?: DamagedScenario } = {};
  const onHandover = (event: HandoverEvent): void => {
    options.damage(event, preserved.memfds!);
    sealLuoHandover(event.memory, event.khoFdtPhys!);
  };
  const machine = await bootedMachine(testImage('6.18.0', { memfd: options.memfd }), onHandover);
  const process = machine.spawn();
  const device = await LiveUpdateDevice.open(process);
  const preserve = async (
    session: Awaited<ReturnType<typeof device.createSession>>,
    token: bigint,
    size: number,
    seed: number,
  ): Promise<PreservedMemfdView> => {
    const fd = await process.memfdCreate(`memfd-${seed}`);
    const data = pattern(size, seed);
    await writeAll(process, fd, data);
    await session.preserveFd(fd, token);
    return { session: session.name, token, data, folios: (await inode(process, fd)).folios };
  };
  const vm0 = await device.createSession('vm0');
  const vm1 = await device.createSession('vm1');
  const memfds = {
    victim: await preserve(vm0, 1n, options.victimSize, 1),
    bystander: await preserve(vm0, 2n, 5 * PAGE_SIZE, 2),
    other: await preserve(vm1, 1n, 2 * MiB + 3 * PAGE_SIZE, 3),
  };
  preserved.memfds = memfds;
  await device.close();
  const next = await kexec(machine, process, testImage('6.18.1', { memfd: options.memfd }));
  return { ...memfds, next, dmesg: () => machine.dmesg(1) };
}
