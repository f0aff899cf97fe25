import { handoverReads, registerFileHandler } from '@liveupdate/core';
import { KernelError, defineModule } from '@liveupdate/kernel';
import { EVENTFD_LUO_FH_COMPATIBLE } from './eventfd-luo-abi.js';
import { createEventfdLuoHandler } from './eventfd-luo-handler.js';

/**
 * The kernel module of the `"eventfd-v1"` LUO file handler. List it after
 * `@liveupdate/core/module` in the kernel image. Without LUO (not loaded, or `liveupdate=off`)
 * eventfds work as ever and simply cannot be preserved.
 */
export const eventfdLuoModule = defineModule({
  name: 'eventfd-luo',
  reads: handoverReads({ compatible: EVENTFD_LUO_FH_COMPATIBLE }),
  init(ctx) {
    try {
      registerFileHandler(ctx, createEventfdLuoHandler(ctx));
    } catch (error) {
      if (!KernelError.isInstance(error) || error.code !== 'EOPNOTSUPP') throw error;
      ctx.log.info('eventfd-luo: live update is not available; eventfds cannot be preserved');
    }
  },
});
