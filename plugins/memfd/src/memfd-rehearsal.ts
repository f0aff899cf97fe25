import { LiveUpdateDevice } from '@liveupdate/core';
import type { ModuleRehearsal } from '@liveupdate/kernel';
import { MappedMemfd } from './mapped-memfd.js';

/** The session and token of the rehearsal's memfd: constants, so nothing but them crosses. */
const SESSION = 'memfd-rehearsal';
const TOKEN = 1;
/** One 2 MiB folio and two pages after it: both kinds of folio a memfd holds. */
const SIZE = 2 * 1024 * 1024 + 2 * 4096;
/** Written before, read after: the rehearsal fails if the memfd came back with other bytes. */
const STAMP = new TextEncoder().encode('memfd rehearsal');

/**
 * The memfd module's rehearsal (see `ModuleRehearsal` of `@liveupdate/kernel`): what a service
 * keeping its memory in a memfd does across a live update. Before: create a memfd, map it, write
 * to it, preserve it in a LUO session. After: retrieve the session and the memfd, map it, read it
 * back, finish the session.
 */
export const memfdRehearsal: ModuleRehearsal = {
  async before(process) {
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession(SESSION);
    const memfd = await MappedMemfd.create(process, SESSION, SIZE);
    memfd.write(SIZE - STAMP.length, STAMP);
    await session.preserveFd(memfd.fd, TOKEN);
  },
  async after(process) {
    const device = await LiveUpdateDevice.open(process);
    const session = await device.retrieveSession(SESSION);
    const fd = await session.retrieveFd(TOKEN);
    const memfd = await MappedMemfd.map(process, fd);
    const stamp = memfd.read(memfd.size - STAMP.length, STAMP.length);
    if (memfd.size !== SIZE || !stamp.every((byte, i) => byte === STAMP[i])) {
      throw new Error(`the memfd came back as ${memfd.size} bytes ending in other bytes`);
    }
    await session.finish();
    await memfd.unmap();
    await Promise.all([session.close(), process.close(fd), device.close()]);
  },
};
