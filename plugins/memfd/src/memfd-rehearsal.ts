import { LiveUpdateDevice } from '@liveupdate/core';
import type { ModuleRehearsal } from '@liveupdate/kernel';
import { MappedMemfd } from './mapped-memfd.js';

/** The session and tokens of the rehearsal's memfds: constants, so nothing but them crosses. */
const SESSION = 'memfd-rehearsal';
const TOKEN = 1;
const SMALL_TOKEN = 2;
/** Three 2 MiB folios. */
const SIZE = 6 * 1024 * 1024;
/**
 * The second memfd grows by one byte a page this many times, so each page is a folio of its own:
 * the paths that run once per folio (KHO's memory map, the boot's reservation, LUO's frame claims,
 * the retrieve, `mmap`) run hundreds of times, as they do for a large file, on 2 MiB of RAM.
 */
const SMALL_FOLIOS = 512;
const PAGE = 4096;
/** Written before, read after: the rehearsal fails if the memfd came back with other bytes. */
const STAMP = new TextEncoder().encode('memfd rehearsal');
const ONE = new Uint8Array([1]);

/**
 * The memfd module's rehearsal (see `ModuleRehearsal` of `@liveupdate/kernel`): what a service
 * keeping its memory in a memfd does across a live update. Before: create two memfds (one of large
 * folios, one of many one-page folios), write to them, preserve them in a LUO session. After:
 * retrieve the session and the memfds, map them, read them back, finish the session.
 */
export const memfdRehearsal: ModuleRehearsal = {
  async before(process) {
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession(SESSION);
    const fd = await process.memfdCreate(SESSION);
    await process.ftruncate(fd, SIZE);
    const memfd = await MappedMemfd.map(process, fd);
    memfd.write(SIZE - STAMP.length, STAMP);
    await session.preserveFd(memfd.fd, TOKEN);
    // Hundreds of small writes, so that the syscall path and the memfd's page cache have run
    // often enough for V8 to optimize them before the update that counts (measured: the retrieve
    // of a 1 GiB memfd inside the blackout took a third as long with them as with one write).
    const small = await process.memfdCreate(SESSION);
    for (let n = 0; n < SMALL_FOLIOS; n++) await process.pwrite(small, ONE, n * PAGE);
    await session.preserveFd(small, SMALL_TOKEN);
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
    const small = await MappedMemfd.map(process, await session.retrieveFd(SMALL_TOKEN));
    if (small.size !== (SMALL_FOLIOS - 1) * PAGE + 1 || small.read(small.size - 1, 1)[0] !== 1) {
      throw new Error(
        `the small-folio memfd came back as ${small.size} bytes, or without its last`,
      );
    }
    await session.finish();
    await Promise.all([memfd.unmap(), small.unmap()]);
    await Promise.all([
      session.close(),
      process.close(fd),
      process.close(small.fd),
      device.close(),
    ]);
  },
};
