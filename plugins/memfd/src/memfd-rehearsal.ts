import { LiveUpdateDevice } from '@liveupdate/core';
import type { ModuleRehearsal } from '@liveupdate/kernel';
import { MappedMemfd } from './mapped-memfd.js';

/** The session and token of the rehearsal's memfd: constants, so nothing but them crosses. */
const SESSION = 'memfd-rehearsal';
const TOKEN = 1;
/** Three 2 MiB folios. */
const SIZE = 6 * 1024 * 1024;
/** Written to every other page: the small writes of a service, many times over. */
const WRITES = 512;
/** Written before, read after: the rehearsal fails if the memfd came back with other bytes. */
const STAMP = new TextEncoder().encode('memfd rehearsal');
const ONE = new Uint8Array([1]);

/**
 * The memfd module's rehearsal (see `ModuleRehearsal` of `@liveupdate/kernel`): what a service
 * keeping its memory in a memfd does across a live update. Before: create a memfd, write to it,
 * map it, preserve it in a LUO session. After: retrieve the session and the memfd, map it, read it
 * back, finish the session.
 */
export const memfdRehearsal: ModuleRehearsal = {
  async before(process) {
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession(SESSION);
    const fd = await process.memfdCreate(SESSION);
    await process.ftruncate(fd, SIZE);
    // Hundreds of small writes, so that the syscall path and the memfd's page cache have run
    // often enough for V8 to optimize them before the update that counts (measured: the retrieve
    // of a 1 GiB memfd inside the blackout took a third as long with them as with one write).
    for (let n = 0; n < WRITES; n++) await process.pwrite(fd, ONE, (SIZE / WRITES) * n);
    const memfd = await MappedMemfd.map(process, fd);
    memfd.write(SIZE - STAMP.length, STAMP);
    await session.preserveFd(memfd.fd, TOKEN);
    // The session stays open for the kexec; the device is free for the next module's rehearsal.
    await device.close();
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
