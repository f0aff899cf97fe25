import { LiveUpdateDevice } from '@liveupdate/core';
import type { ModuleRehearsal } from '@liveupdate/kernel';
import { O_RDWR } from '@liveupdate/machine';
import { VALUE_DEVICE_PATH } from './value-file-operations.js';

/** The rehearsal's session and token: constants, so nothing but them crosses its kexec. */
export const VALUE_REHEARSAL_SESSION = '__NAME__-rehearsal';
const TOKEN = 1n;
/** Written before, read after: the rehearsal fails if the file came back with another value. */
const VALUE = new TextEncoder().encode('__NAME__ rehearsal');

/**
 * The module's rehearsal (`rehearse` of `defineModule`). A kernel image made with
 * `createKernelImage({ rehearse: true })` runs it when it is loaded, before the blackout, between
 * two private kernels on private RAM: a live update of one file of `/dev/__NAME__`, so that the
 * device's and the handler's code (`preserve`, `freeze`, `retrieve`, `finish`) has run once when
 * the real update runs it. Before: open the device, write a value, preserve the file in a LUO
 * session. After: retrieve the session and the file, read the value back, finish the session.
 * It uses only what a process would (syscalls); a throw is logged and the kernel boots without.
 */
export const valueRehearsal: ModuleRehearsal = {
  async before(process) {
    const fd = await process.open(VALUE_DEVICE_PATH, O_RDWR);
    await process.write(fd, VALUE);
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession(VALUE_REHEARSAL_SESSION);
    await session.preserveFd(fd, TOKEN);
    // The session stays open for the kexec; the device is free for the next module's rehearsal.
    await device.close();
  },
  async after(process) {
    const device = await LiveUpdateDevice.open(process);
    const session = await device.retrieveSession(VALUE_REHEARSAL_SESSION);
    const fd = await session.retrieveFd(TOKEN);
    const value = await process.pread(fd, VALUE.length + 1, 0);
    if (value.length !== VALUE.length || !value.every((byte, i) => byte === VALUE[i])) {
      throw new Error(`the file came back with ${value.length} other bytes`);
    }
    await session.finish();
    await Promise.all([session.close(), process.close(fd), device.close()]);
  },
};
