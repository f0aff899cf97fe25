import { registerFileHandler } from '@liveupdate/core';
import { KernelError, defineModule } from '@liveupdate/kernel';
import { registerMemfdCreate } from './memfd-create.js';
import { MEMFD_SERVICE, MemfdFileSystem } from './memfd-file-system.js';
import { MEMFD_LUO_FH_COMPATIBLE } from './memfd-luo-abi.js';
import { createMemfdLuoHandler } from './memfd-luo-handler.js';

/**
 * The memfd kernel module: the `memfd_create` syscall, the {@link MEMFD_SERVICE} for later
 * modules, and the `"memfd-v2"` LUO file handler. List it after `@liveupdate/core/module` in the
 * kernel image. Without LUO (not loaded, or `liveupdate=off`) memfds work and cannot be preserved,
 * as when upstream's `late_initcall` finds LUO disabled.
 */
export const memfdModule = defineModule({
  name: 'memfd',
  reads: [MEMFD_LUO_FH_COMPATIBLE],
  init(ctx) {
    const memfds = new MemfdFileSystem(ctx);
    registerMemfdCreate(ctx, memfds);
    ctx.services.provide(MEMFD_SERVICE, memfds);
    try {
      registerFileHandler(ctx, createMemfdLuoHandler(memfds));
    } catch (error) {
      if (!KernelError.isInstance(error) || error.code !== 'EOPNOTSUPP') throw error;
      ctx.log.info('memfd: live update is not available; memfds cannot be preserved');
    }
  },
});
