// A kernel learns at kexec_load what the loaded image reads (its notes), and refuses a kexec that
// would hand over something the image cannot read, before anything is frozen (issue 11).
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  LIVEUPDATE_IOCTL_CHECK_KEXEC,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  checkKexecArg,
  luoAbiCompatible,
} from '@liveupdate/core';
import { createKernelImage } from '@liveupdate/kernel';
import { LINUX_REBOOT_CMD_KEXEC } from '@liveupdate/machine';
import { LIVEUPDATE_CMDLINE, liveUpdateImage } from '@liveupdate/testkit';
import {
  NOTE_MODULE,
  boot,
  createNote,
  noteCalls,
  openDevice,
  preserveNote,
  readLuoFdt,
  readNote,
} from './helpers.js';

const require = createRequire(import.meta.url);
const moduleUrl = (specifier: string) => pathToFileURL(require.resolve(specifier)).href;
/** A kernel whose LUO core predates luo-v2: it reads and writes luo-v1 only. */
const luoV1Image = (version: string) =>
  createKernelImage({
    version,
    cmdline: LIVEUPDATE_CMDLINE,
    modules: [moduleUrl('@liveupdate/core/module-luo-v1'), NOTE_MODULE],
  });

describe('the check before a kexec', () => {
  it('lets CHECK_KEXEC and reboot through when the loaded kernel reads every format', async () => {
    const harness = await boot();
    const device = await openDevice(harness.process);
    await preserveNote(await device.createSession('s'), 7, 'kept');
    await harness.process.kexecLoad(liveUpdateImage({ version: '6.19.0', modules: [NOTE_MODULE] }));
    expect(await device.checkKexec()).toEqual({
      ok: true,
      version: '6.19.0',
      problems: [],
      problemCount: 0,
    });
    expect(harness.machine.dmesg()).toMatch(/kexec: loaded 6\.19\.0 .*reads .*note-v1/);
    const next = await harness.liveUpdate(
      liveUpdateImage({ version: '6.19.0', modules: [NOTE_MODULE] }),
    );
    const session = await (await openDevice(next)).retrieveSession('s');
    expect(await readNote(next, await session.retrieveFd(7))).toBe('kept');
  });

  it('refuses a kernel without the handler before anything is frozen, naming session, token and format', async () => {
    const harness = await boot();
    const device = await openDevice(harness.process);
    const session = await device.createSession('vm0');
    await preserveNote(session, 7, 'kept');
    await noteCalls(harness.process);
    await harness.process.kexecLoad(liveUpdateImage({ version: '6.17.0', modules: [] }));

    const report = await device.checkKexec();
    expect(report.ok).toBe(false);
    expect(report.version).toBe('6.17.0');
    expect(report.problemCount).toBe(1);
    expect(report.problems[0]).toMatch(
      /^liveupdate: session "vm0" token 7: note-v1 writes note-v1; it reads none of them$/,
    );

    await expect(harness.process.reboot(LINUX_REBOOT_CMD_KEXEC)).rejects.toMatchObject({
      code: 'ENOEXEC',
    });
    expect(harness.machine.kernelVersion).not.toBe('6.17.0');
    expect(harness.machine.dmesg()).toMatch(
      /kexec: 6\.17\.0 cannot read liveupdate: session "vm0" token 7: note-v1/,
    );
    // Nothing was frozen or unfrozen, and the session still takes files.
    expect(await noteCalls(harness.process)).toEqual([]);
    await preserveNote(session, 8, 'added after the refusal');

    // Load a kernel that reads it, and the same session crosses.
    const next = await harness.liveUpdate(
      liveUpdateImage({ version: '6.19.0', modules: [NOTE_MODULE] }),
    );
    const incoming = await (await openDevice(next)).retrieveSession('vm0');
    expect(await readNote(next, await incoming.retrieveFd(7))).toBe('kept');
    expect(await readNote(next, await incoming.retrieveFd(8))).toBe('added after the refusal');
  });

  it('reports a kernel without LUO as unable to read the LUO handover', async () => {
    const harness = await boot();
    const device = await openDevice(harness.process);
    await preserveNote(await device.createSession('s'), 1, 'x');
    await harness.process.kexecLoad(
      createKernelImage({ version: '6.17.0', cmdline: LIVEUPDATE_CMDLINE, modules: [NOTE_MODULE] }),
    );
    const report = await device.checkKexec();
    expect(report.ok).toBe(false);
    expect(report.problems).toContainEqual(
      'liveupdate: the LUO handover: this kernel writes luo-v2, luo-v1; it reads none of them',
    );
  });

  it('reports a kernel whose command line leaves LUO or KHO off', async () => {
    const harness = await boot();
    const device = await openDevice(harness.process);
    await preserveNote(await device.createSession('s'), 1, 'x');
    await harness.process.kexecLoad(
      liveUpdateImage({ version: '6.19.0', modules: [NOTE_MODULE], cmdline: 'liveupdate=off' }),
    );
    expect((await device.checkKexec()).problems).toEqual([
      'liveupdate: the LUO handover: its command line does not turn LUO on (liveupdate=on)',
    ]);
    await expect(harness.process.reboot(LINUX_REBOOT_CMD_KEXEC)).rejects.toMatchObject({
      code: 'ENOEXEC',
    });
    // KHO off: LUO would be off too, and the handover ignored.
    await harness.process.kexecLoad(
      liveUpdateImage({ version: '6.19.0', modules: [NOTE_MODULE], cmdline: 'kho=off' }),
    );
    expect((await device.checkKexec()).problems).toEqual([
      'liveupdate: the LUO handover: its command line does not turn KHO on (kho=on)',
    ]);
  });

  it('validates CHECK_KEXEC: ENOENT with no kernel loaded, EINVAL for flags, its own number', async () => {
    const harness = await boot();
    const device = await openDevice(harness.process);
    expect(LIVEUPDATE_IOCTL_CHECK_KEXEC).toBe(0xba80);
    await expect(device.checkKexec()).rejects.toMatchObject({ code: 'ENOENT' });
    await harness.process.kexecLoad(liveUpdateImage({ version: '6.19.0', modules: [NOTE_MODULE] }));
    const arg = new Uint8Array(checkKexecArg.size);
    new DataView(arg.buffer).setUint32(0, checkKexecArg.size, true);
    new DataView(arg.buffer).setUint32(4, 1, true);
    await expect(
      harness.process.ioctl(device.fd, LIVEUPDATE_IOCTL_CHECK_KEXEC, arg),
    ).rejects.toMatchObject({ code: 'EINVAL' });
    // A session ioctl number on the device is not CHECK_KEXEC.
    await expect(
      harness.process.ioctl(device.fd, LIVEUPDATE_SESSION_PRESERVE_FD, arg),
    ).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('cuts the report at a line and counts every problem', async () => {
    const harness = await boot();
    const device = await openDevice(harness.process);
    const session = await device.createSession('many');
    for (let token = 1; token <= 80; token++) {
      const fd = await createNote(harness.process, `note ${token}`);
      await session.preserveFd(fd, token);
      await harness.process.close(fd);
    }
    await harness.process.kexecLoad(liveUpdateImage({ version: '6.17.0', modules: [] }));
    const report = await device.checkKexec();
    expect(report.problemCount).toBe(80);
    expect(report.problems.length).toBeLessThan(80);
    expect(report.problems.length).toBeGreaterThan(10);
    for (const line of report.problems) {
      expect(line).toMatch(
        /^liveupdate: session "many" token \d+: note-v1 writes note-v1; it reads none of them$/,
      );
    }
  });
});

describe('the LUO ABI across kernels', () => {
  it('writes luo-v1 for a kernel whose core reads only luo-v1, and that kernel writes luo-v1 back', async () => {
    const fdts: string[] = [];
    const harness = await boot({
      onHandover: ({ memory, khoFdtPhys }) => {
        fdts.push(luoAbiCompatible(readLuoFdt(memory, khoFdtPhys!).version));
      },
    });
    await preserveNote(await (await openDevice(harness.process)).createSession('s'), 1, 'v2 → v1');
    const old = await harness.liveUpdate(luoV1Image('6.18.0'));
    expect(fdts).toEqual(['luo-v1']);
    const oldDevice = await openDevice(old);
    const back = await oldDevice.retrieveSession('s');
    const fd = await back.retrieveFd(1);
    expect(await readNote(old, fd)).toBe('v2 → v1');
    await back.finish();
    await preserveNote(await oldDevice.createSession('t'), 2, 'v1 → v2');

    // The luo-v1 core writes luo-v1 even for a kernel that reads both, which reads it.
    const next = await harness.liveUpdate(
      liveUpdateImage({ version: '6.19.0', modules: [NOTE_MODULE] }),
    );
    expect(fdts).toEqual(['luo-v1', 'luo-v1']);
    const session = await (await openDevice(next)).retrieveSession('t');
    expect(await readNote(next, await session.retrieveFd(2))).toBe('v1 → v2');
    expect(harness.machine.dmesg()).toMatch(/LUO: the incoming handover is luo-v1/);
  });
});
