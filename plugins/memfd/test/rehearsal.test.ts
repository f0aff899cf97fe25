import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { SEEK_END } from '@liveupdate/machine';
import {
  MEMFD_V2_MODULE,
  bootedMachine,
  expectBytes,
  kexec,
  pattern,
  readAll,
  testImage,
  writeAll,
} from './helpers.js';

describe("the memfd module's rehearsal", () => {
  it.each([
    ['memfd-v3', {}],
    ['memfd-v2', { memfd: MEMFD_V2_MODULE }],
  ])(
    'preserves and retrieves a memfd across a private kexec (%s), then a real memfd crosses',
    async (_format, options) => {
      const machine = await bootedMachine(testImage('6.18.0', { ...options, rehearse: true }));
      expect(machine.dmesg()).toMatch(
        /rehearsal: a live update rehearsed on private memory at load in \d+\.\d ms \(memfd\)/,
      );
      const process = machine.spawn();
      const fd = await process.memfdCreate('cache');
      const data = pattern(3 * 1024 * 1024 + 5, 3);
      await writeAll(process, fd, data);
      const device = await LiveUpdateDevice.open(process);
      await (await device.createSession('cache')).preserveFd(fd, 1);

      const next = await kexec(
        machine,
        process,
        testImage('6.18.1', { ...options, rehearse: true }),
      );
      expect(machine.dmesg()).toMatch(/rehearsal: a live update rehearsed/);
      const nextDevice = await LiveUpdateDevice.open(next);
      // The rehearsal's own session never reaches the machine's kernels.
      await expect(nextDevice.retrieveSession('memfd-rehearsal')).rejects.toMatchObject({
        code: 'ENOENT',
      });
      const session = await nextDevice.retrieveSession('cache');
      const memfd = await session.retrieveFd(1);
      expect(await next.lseek(memfd, 0, SEEK_END)).toBe(data.length);
      expectBytes(await readAll(next, memfd, data.length), data);
      await session.finish();
    },
    60_000,
  );

  it('fails where a service would, without LUO, and the kernel runs without it', async () => {
    const machine = await bootedMachine(testImage('6.18.0', { luo: false, rehearse: true }));
    expect(machine.dmesg()).toMatch(
      /rehearsal: failed at memfd: before: .*; this kernel runs without it \(memfd\)/,
    );
    const process = machine.spawn();
    const fd = await process.memfdCreate('plain');
    expect(await process.write(fd, new Uint8Array([1, 2, 3]))).toBe(3);
  });
});
