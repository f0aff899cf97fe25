// The testkit's own helpers: what images they build, and how the harness drives a live update.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { chromeTraceProblems, type ChromeTrace, type Process } from '@liveupdate/machine';
import { LIVEUPDATE_CMDLINE, liveUpdateImage, twoStage } from '@liveupdate/testkit';
import { NOTE_MODULE, TEST_RAM, boot, preserveNote, readNote } from './helpers.js';

describe('liveUpdateImage', () => {
  it('puts the liveupdate module first, the testkit module second, and appends extra command-line words', () => {
    const image = liveUpdateImage({
      version: '6.18.7',
      modules: [NOTE_MODULE],
      cmdline: 'liveupdate.max_files=1',
    });
    expect(image.version).toBe('6.18.7');
    expect(image.cmdline).toBe(`${LIVEUPDATE_CMDLINE} liveupdate.max_files=1`);
    expect(image.modules).toHaveLength(3);
    expect(image.modules[0]).toMatch(/^file:.*\/core\/dist\/liveupdate-module\.js$/);
    expect(image.modules[1]).toMatch(/^file:.*\/testkit\/dist\/testkit-module\.js$/);
    expect(image.modules[2]).toBe(NOTE_MODULE);
    expect(image.rehearse).toBeUndefined();
    expect(liveUpdateImage({ version: '6.18.7', modules: [], rehearse: true }).rehearse).toBe(true);
  });
});

describe('LiveUpdateHarness', () => {
  it('reboots through its process into the next version, with the same modules, and hands out a new process', async () => {
    const harness = await boot({ version: '6.18.9' });
    const first = harness.process;
    await preserveNote(await (await LiveUpdateDevice.open(first)).createSession('s'), 1, 'kept');
    const next = await harness.liveUpdate();
    expect(harness.process).toBe(next);
    expect(first.alive).toBe(false);
    expect(harness.machine.kernelVersion).toBe('6.18.10');
    // The note module is loaded again: its file comes back.
    const session = await (await LiveUpdateDevice.open(next)).retrieveSession('s');
    expect(await readNote(next, await session.retrieveFd(1n))).toBe('kept');
    await harness.liveUpdate('7.0.0-rc1');
    expect(harness.machine.kernelVersion).toBe('7.0.0-rc1');
  });

  it('rehearses the update in every kernel it boots when asked to, and in none otherwise', async () => {
    const rehearsed = /rehearsal: a live update rehearsed on private memory at load in [\d.]+ ms/;
    const harness = await boot({ rehearse: true });
    expect(harness.machine.dmesg()).toMatch(rehearsed);
    await harness.liveUpdate();
    expect(harness.machine.dmesg()).toMatch(rehearsed);
    const plain = await boot();
    await plain.liveUpdate();
    expect(plain.machine.dmesg()).not.toMatch(/rehearsal:/);
  });

  it('writes a Chrome trace in which both kernels have their own track and every span nests in its thread', async () => {
    const harness = await boot({ version: '6.18.0' });
    await preserveNote(
      await (await LiveUpdateDevice.open(harness.process)).createSession('s'),
      1,
      'x',
    );
    const next = await harness.liveUpdate();
    await (await (await LiveUpdateDevice.open(next)).retrieveSession('s')).retrieveFd(1n);
    const dir = await mkdtemp(join(tmpdir(), 'trace-'));
    try {
      await harness.writeTrace(join(dir, 'trace.json'));
      const trace = JSON.parse(await readFile(join(dir, 'trace.json'), 'utf8')) as ChromeTrace;
      expect(trace.displayTimeUnit).toBe('ms');
      const names = new Map(
        trace.traceEvents
          .filter((e) => e.name === 'process_name')
          .map((e) => [e.pid, e.args!.name]),
      );
      expect([...names.values()]).toEqual(
        expect.arrayContaining(['machine', 'kernel 6.18.0 (boot 0)', 'kernel 6.18.1 (boot 1)']),
      );
      const spanNames = (kernel: string): string[] =>
        trace.traceEvents
          .filter((e) => e.ph === 'X' && names.get(e.pid) === kernel)
          .map((e) => e.name);
      expect(spanNames('kernel 6.18.0 (boot 0)')).toEqual(
        expect.arrayContaining([
          'boot',
          'reboot',
          'reboot-notifiers',
          'luo-freeze',
          'kho-finalize',
        ]),
      );
      expect(spanNames('kernel 6.18.1 (boot 1)')).toEqual(
        expect.arrayContaining(['boot', 'memory-init', 'luo-deserialize', 'luo-retrieve']),
      );
      expect(spanNames('machine')).toContain('kexec-handoff');
      expect(trace.traceEvents.filter((e) => e.ph === 'C' && e.name === 'memory')).toHaveLength(2);
      expect(chromeTraceProblems(trace.traceEvents)).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('twoStage', () => {
  it("opens a device in each kernel, hands before's result to after, and returns after's", async () => {
    const seen: { process: Process; device: LiveUpdateDevice }[] = [];
    const result = await twoStage({
      modules: [NOTE_MODULE],
      ramBytes: TEST_RAM,
      async before(process, device) {
        seen.push({ process, device });
        await preserveNote(await device.createSession('s'), 1, 'carried');
        return { token: 1n };
      },
      async after(process, device, carried) {
        seen.push({ process, device });
        const session = await device.retrieveSession('s');
        return readNote(process, await session.retrieveFd(carried.token));
      },
    });
    expect(result).toBe('carried');
    expect(seen.map(({ process, device }) => device.process === process)).toEqual([true, true]);
    expect(seen[1]!.process).not.toBe(seen[0]!.process);
  });

  it('shuts the machine down when a stage throws, and rethrows', async () => {
    let last: Process | undefined;
    const failure = new Error('the check failed');
    await expect(
      twoStage({
        modules: [NOTE_MODULE],
        ramBytes: TEST_RAM,
        before: async () => undefined,
        async after(process) {
          last = process;
          throw failure;
        },
      }),
    ).rejects.toBe(failure);
    expect(last?.alive).toBe(false);
    await expect(last!.open('/dev/null')).rejects.toMatchObject({ code: 'ESRCH' });
  });
});
