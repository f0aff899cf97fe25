// The module's rehearsal: run at load by an image made with `rehearse: true`, on private memory.
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { ringbufCreate } from '@liveupdate/example-ringbuf';
import { append, boot, drain, errnoOf, preserveIn, record, retrieveRing } from './helpers.js';

const REHEARSED =
  /rehearsal: a live update rehearsed on private memory at load in [\d.]+ ms \(ringbuf\)/;

describe("the ring buffer module's rehearsal", () => {
  it('rehearses at load, leaves nothing in the real kernel, and a real ring buffer then crosses', async () => {
    const harness = await boot({ rehearse: true });
    expect(harness.machine.dmesg()).toMatch(REHEARSED);
    const process = harness.process;
    const fd = await ringbufCreate(process, 16 * 1024);
    await append(
      process,
      fd,
      [1, 2, 3].map((n) => record(n)),
    );
    await preserveIn(await LiveUpdateDevice.open(process), 'telemetry', fd);

    const next = await harness.liveUpdate();
    expect(harness.machine.dmesg()).toMatch(REHEARSED);
    const device = await LiveUpdateDevice.open(next);
    // The rehearsal's session lived on private memory only.
    expect(await errnoOf(device.retrieveSession('ringbuf-rehearsal'))).toBe('ENOENT');
    const ring = await retrieveRing(device, 'telemetry');
    expect(await drain(next, ring)).toEqual([1, 2, 3].map((n) => record(n)));
  });

  it('fails at its first step without LUO, and the kernel boots with ring buffers that work', async () => {
    const harness = await boot({ rehearse: true, cmdline: 'liveupdate=off' });
    expect(harness.machine.dmesg()).toMatch(/rehearsal: failed at ringbuf: before: .*ENOENT/);
    const fd = await ringbufCreate(harness.process, 4096);
    await append(harness.process, fd, [record(1)]);
    expect(await drain(harness.process, fd)).toEqual([record(1)]);
  });
});
