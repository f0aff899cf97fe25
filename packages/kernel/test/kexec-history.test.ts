import { describe, expect, it } from 'vitest';
import { decodeFdt, encodeFdt, readFdtHeader, readU64 } from '@liveupdate/fdt';
import {
  KEXEC_HISTORY_LOG_MAX,
  KEXEC_HISTORY_PHASES,
  KexecHistoryError,
  decodeKexecHistory,
  encodeKexecHistory,
  sealKhoHandover,
  type KexecHistory,
} from '@liveupdate/kernel';
import {
  KernelError,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  type HandoverEvent,
  type PhysicalMemory,
  type Process,
} from '@liveupdate/machine';
import { bootedMachine, kexec, probe, testImage } from './helpers.js';

const SYSFS = '/sys/kernel/liveupdate';
const decoder = new TextDecoder();

/** The whole text of a file, read in small pieces (as `cat` would, past one read). */
async function readText(process: Process, path: string): Promise<string> {
  const fd = await process.open(path, O_RDONLY);
  try {
    const chunks: Uint8Array[] = [];
    for (;;) {
      const chunk = await process.read(fd, 100);
      if (chunk.length === 0) break;
      chunks.push(chunk);
    }
    return decoder.decode(Buffer.concat(chunks));
  } finally {
    await process.close(fd);
  }
}

async function errnoOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return KernelError.isInstance(error) ? error.code : String(error);
  }
}

/** The `kexec-history` blob of the handover in RAM, found from the root FDT. */
function historyBlob(memory: PhysicalMemory, fdtPhys: number): { phys: number; size: number } {
  const root = decodeFdt(
    memory.read(fdtPhys, readFdtHeader(memory.read(fdtPhys, 40)).totalSize),
  ).root;
  const node = root.children.find((c) => c.name === 'kexec-history');
  if (!node) throw new Error('the handover has no kexec-history subtree');
  return {
    phys: Number(readU64(node, 'preserved-data', { littleEndian: true })),
    size: Number(readU64(node, 'blob-size', { littleEndian: true })),
  };
}

describe('the kernel remembers the update that brought it up', () => {
  it('after a cold boot: no previous kernel, a count of 0, read-only files', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    expect(await readText(process, `${SYSFS}/history`)).toBe(
      'none: a cold boot (or a kexec without KHO)\n',
    );
    expect(await readText(process, `${SYSFS}/kexec_count`)).toBe('0\n');
    expect(await readText(process, `${SYSFS}/failures`)).toBe('');
    expect(await errnoOf(process.open(`${SYSFS}/previous/version`, O_RDONLY))).toBe('ENOENT');
    expect(await errnoOf(process.open(`${SYSFS}/kexec_count`, O_WRONLY))).toBe('EACCES');
    expect(await errnoOf(process.open(`${SYSFS}/kexec_count`, O_RDWR))).toBe('EACCES');
  });

  it('hands on the version, the count, the log tail and the phase times, kexec after kexec', async () => {
    const machine = await bootedMachine(testImage('6.18.0'));
    let process = machine.spawn();
    const before = (performance.timeOrigin + performance.now()) * 1000;
    process = await kexec(machine, process, testImage('6.18.1'));
    const after = (performance.timeOrigin + performance.now()) * 1000;

    expect(await readText(process, `${SYSFS}/kexec_count`)).toBe('1\n');
    expect(await readText(process, `${SYSFS}/previous/version`)).toBe('6.18.0\n');
    expect(await readText(process, `${SYSFS}/history`)).toBe(
      'received: update 1 since cold boot, from 6.18.0\n',
    );
    // The old kernel's log, up to its reboot notifiers, and not the new kernel's.
    const log = await readText(process, `${SYSFS}/previous/log`);
    expect(log).toContain('reboot: running reboot notifiers');
    expect(log).toContain('kexec: loaded 6.18.1');
    expect(log).not.toContain('kexec: update 1 since cold boot');
    expect(machine.dmesg(0)).toContain(log.trim().split('\n').at(-1));
    // One line per phase: name, start and end in host-clock microseconds, in order.
    const phases = (await readText(process, `${SYSFS}/previous/phases`))
      .trim()
      .split('\n')
      .map((line) => line.split(' '));
    expect(phases.map(([name]) => name)).toEqual([...KEXEC_HISTORY_PHASES]);
    for (const [, start, end] of phases) {
      expect(Number(start)).toBeGreaterThanOrEqual(Math.floor(before));
      expect(Number(end)).toBeGreaterThanOrEqual(Number(start));
      expect(Number(end)).toBeLessThanOrEqual(Math.ceil(after));
    }
    const [reboot, check, notifiers] = phases.map(([, s, e]) => [Number(s), Number(e)]);
    expect(check![0]).toBeGreaterThanOrEqual(reboot![0]!);
    expect(notifiers![0]).toBeGreaterThanOrEqual(check![1]!);

    process = await kexec(machine, process, testImage('6.18.2'));
    expect(await readText(process, `${SYSFS}/kexec_count`)).toBe('2\n');
    expect(await readText(process, `${SYSFS}/previous/version`)).toBe('6.18.1\n');
    expect(machine.dmesg(2)).toContain('kexec: update 2 since cold boot, from 6.18.1');
  });

  it('reports a damaged history as damaged, uses none of it, boots, and hands on an unknown count', async () => {
    let handovers = 0;
    const machine = await bootedMachine(testImage('6.18.0'), {
      onHandover: ({ memory, khoFdtPhys }: HandoverEvent) => {
        if (handovers++ > 0) return; // only the first update's history is damaged
        const blob = historyBlob(memory, khoFdtPhys!);
        // The version string's first byte becomes a control character: still a valid FDT.
        const bytes = memory.read(blob.phys, blob.size);
        const at = Buffer.from(bytes).indexOf('6.18.0\0');
        memory.write(blob.phys + at, new Uint8Array([0x07]));
        // As a writer that knows the format would: KHO's blob-crc is what the history's own
        // checks stand behind.
        sealKhoHandover(memory, khoFdtPhys!);
      },
    });
    let process = machine.spawn();
    await probe(process, 'preserve', { orders: [0], seed: 3 });
    process = await kexec(machine, process, testImage('6.18.1'));
    expect(machine.state).toBe('running');
    const history = await readText(process, `${SYSFS}/history`);
    expect(history).toMatch(
      /^damaged: kexec-history at 0x[0-9a-f]+\+\d+: version "\\u0007\.18\.0"\n$/,
    );
    expect(machine.dmesg(1)).toContain('kexec: the incoming history is damaged and not used');
    expect(await errnoOf(process.open(`${SYSFS}/kexec_count`, O_RDONLY))).toBe('ENOENT');
    expect(await errnoOf(process.open(`${SYSFS}/previous/log`, O_RDONLY))).toBe('ENOENT');

    // 6.18.1 cannot know how many updates came before it: it says so, and so does the next one,
    // instead of starting again at "update 1" as a cold boot's first update would.
    process = await kexec(machine, process, testImage('6.18.2'));
    expect(machine.dmesg(1)).toContain(
      'kexec: handing over history: 6.18.1, update ? since cold boot (not known',
    );
    expect(await readText(process, `${SYSFS}/history`)).toMatch(
      /^received: update \? since cold boot \(not known: .*\), from 6\.18\.1\n$/,
    );
    expect(await errnoOf(process.open(`${SYSFS}/kexec_count`, O_RDONLY))).toBe('ENOENT');
    expect(await readText(process, `${SYSFS}/previous/version`)).toBe('6.18.1\n');
    process = await kexec(machine, process, testImage('6.18.3'));
    expect(await readText(process, `${SYSFS}/history`)).toMatch(/^received: update \? since/);
    expect(await errnoOf(process.open(`${SYSFS}/kexec_count`, O_RDONLY))).toBe('ENOENT');
  });
});

describe('the kexec-history-v1 codec', () => {
  const history: KexecHistory = {
    kexecCount: 3,
    version: '6.19.0',
    log: '[    0.000000] Linux version 6.19.0\n',
    phases: { reboot: { start: 1_000_000, end: 1_004_000 } },
  };

  it('decodes what it encodes', () => {
    expect(decodeKexecHistory(encodeKexecHistory(history), 2_000_000)).toEqual(history);
  });

  it.each<[string, Partial<KexecHistory>, RegExp]>([
    ['an empty version', { version: '' }, /version ""/],
    ['a version of 65 bytes', { version: 'v'.repeat(65) }, /version "v{65}"/],
    ['a log over 16 KiB', { log: 'x'.repeat(KEXEC_HISTORY_LOG_MAX + 1) }, /log of 16385 bytes/],
    ['a NUL in the log', { log: 'a\0b' }, /NUL/],
    [
      'a phase that ends before it starts',
      { phases: { reboot: { start: 5, end: 4 } } },
      /phase reboot <5 4>/,
    ],
    ['a phase in the future', { phases: { reboot: { start: 5, end: 3_000_000 } } }, /phase reboot/],
  ])('refuses %s, naming it', (_what, change, reason) => {
    const blob = encodeKexecHistory({ ...history, ...change });
    expect(() => decodeKexecHistory(blob, 2_000_000)).toThrow(KexecHistoryError);
    expect(() => decodeKexecHistory(blob, 2_000_000)).toThrow(reason);
  });

  it('writes an unknown count as 0 and reads 0 back as unknown', () => {
    const unknown: KexecHistory = { ...history, kexecCount: undefined };
    const blob = encodeKexecHistory(unknown);
    const root = decodeFdt(blob).root;
    expect(readU64(root, 'kexec-count', { littleEndian: true })).toBe(0n);
    expect(decodeKexecHistory(blob, 2_000_000)).toEqual(unknown);
  });

  it('refuses a count past 2^53 − 1', () => {
    const blob = encodeKexecHistory({ ...history, kexecCount: Number.MAX_SAFE_INTEGER });
    const root = decodeFdt(blob).root;
    const value = root.properties.find((p) => p.name === 'kexec-count')!.value;
    new DataView(value.buffer, value.byteOffset, 8).setBigUint64(0, 1n << 53n, true);
    expect(() => decodeKexecHistory(encodeFdt(root), 2_000_000)).toThrow(
      /kexec-count 9007199254740992/,
    );
  });

  it('refuses bytes that are not an FDT', () => {
    expect(() => decodeKexecHistory(new Uint8Array(64), 1)).toThrow(/not a valid FDT/);
  });
});
