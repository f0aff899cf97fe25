import { registerFileHandler } from '@liveupdate/core';
import { KernelError, defineModule } from '@liveupdate/kernel';
import { registerRingbufCreate } from './ringbuf-create.js';
import { RINGBUF_LUO_FH_COMPATIBLE } from './ringbuf-luo-abi.js';
import { createRingbufLuoHandler } from './ringbuf-luo-handler.js';
import { ringbufRehearsal } from './ringbuf-rehearsal.js';

/**
 * The ring buffer kernel module: the `ringbuf_create` syscall and the `"ringbuf-v1"` LUO file
 * handler. List it after `@liveupdate/core/module` in the kernel image. Without LUO (not loaded,
 * or `liveupdate=off`) ring buffers work and simply cannot be preserved. In an image made with
 * `rehearse: true` it rehearses a ring buffer's live update when the image is loaded.
 */
export const ringbufModule = defineModule({
  name: 'ringbuf',
  reads: [RINGBUF_LUO_FH_COMPATIBLE],
  rehearse: ringbufRehearsal,
  init(ctx) {
    registerRingbufCreate(ctx);
    try {
      registerFileHandler(ctx, createRingbufLuoHandler(ctx));
    } catch (error) {
      if (!KernelError.isInstance(error) || error.code !== 'EOPNOTSUPP') throw error;
      ctx.log.info('ringbuf: live update is not available; ring buffers cannot be preserved');
    }
  },
});
