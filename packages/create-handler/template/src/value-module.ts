import { registerFileHandler } from '@liveupdate/core';
import { KernelError, defineModule } from '@liveupdate/kernel';
import { VALUE_DEVICE_PATH, createValueFileOperations } from './value-file-operations.js';
import { VALUE_LUO_COMPATIBLE } from './value-luo-abi.js';
import { createValueLuoHandler } from './value-luo-handler.js';
import { valueRehearsal } from './value-rehearsal.js';

/**
 * The kernel module: the char device `/dev/__NAME__` and its LUO file handler `"__NAME__-v1"`.
 * List it after `@liveupdate/core/module` in a kernel image. Without LUO (not loaded, or
 * `liveupdate=off`) the device works and its files simply cannot be preserved.
 */
export const valueModule = defineModule({
  name: '__NAME__',
  // What this kernel reads after a live update. A kernel about to kexec into this one reads it
  // from the image and refuses (ENOEXEC, before the blackout) to carry a format missing here.
  reads: [VALUE_LUO_COMPATIBLE],
  // A live update of one file, run when an image made with `rehearse: true` is loaded, so the
  // real update does not run this module's code for the first time inside its blackout.
  rehearse: valueRehearsal,
  init(ctx) {
    const fops = createValueFileOperations(ctx);
    ctx.vfs.registerCharDevice(VALUE_DEVICE_PATH, fops);
    try {
      registerFileHandler(ctx, createValueLuoHandler(ctx, fops));
    } catch (error) {
      if (!KernelError.isInstance(error) || error.code !== 'EOPNOTSUPP') throw error;
      ctx.log.info('__NAME__: live update is not available; its files cannot be preserved');
    }
  },
});
