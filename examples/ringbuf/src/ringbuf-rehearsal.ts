import { LiveUpdateDevice } from '@liveupdate/core';
import type { ModuleRehearsal } from '@liveupdate/kernel';
import { ringbufCreate } from './ringbuf-client.js';

/** The session and token of the rehearsal's ring buffer: constants, so nothing but them crosses. */
const SESSION = 'ringbuf-rehearsal';
const TOKEN = 1;
/** Records written before the kexec and read back after it, in order. */
const RECORDS = 64;
const record = (n: number): Uint8Array => new TextEncoder().encode(`rehearsal record ${n}`);

/**
 * The ring buffer module's rehearsal (see `ModuleRehearsal` of `@liveupdate/kernel`): what a
 * producer of telemetry does across a live update, on private memory when a kernel image with
 * `rehearse` is loaded, so that the real update does not run the handler's `preserve`, `freeze`
 * and `retrieve` for the first time. Before: create a ring buffer, append records, preserve it.
 * After: retrieve it, read every record back in order, finish the session.
 */
export const ringbufRehearsal: ModuleRehearsal = {
  async before(process) {
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession(SESSION);
    const fd = await ringbufCreate(process, 16 * 1024);
    for (let n = 0; n < RECORDS; n++) await process.write(fd, record(n));
    await session.preserveFd(fd, TOKEN);
    // The session stays open for the kexec; the device is free for the next module's rehearsal.
    await Promise.all([process.close(fd), device.close()]);
  },
  async after(process) {
    const device = await LiveUpdateDevice.open(process);
    const session = await device.retrieveSession(SESSION);
    const fd = await session.retrieveFd(TOKEN);
    for (let n = 0; n < RECORDS; n++) {
      const got = new TextDecoder().decode(await process.read(fd, 4096));
      const expected = new TextDecoder().decode(record(n));
      if (got !== expected) throw new Error(`record ${n} came back as "${got}"`);
    }
    await session.finish();
    await Promise.all([session.close(), process.close(fd), device.close()]);
  },
};
