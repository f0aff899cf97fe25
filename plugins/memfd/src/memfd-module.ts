import { registerFileHandler } from '@liveupdate/core';
import { KernelError, defineModule, type KernelModule } from '@liveupdate/kernel';
import { registerMemfdCreate } from './memfd-create.js';
import { MEMFD_SERVICE, MemfdFileSystem } from './memfd-file-system.js';
import { MEMFD_LUO_FH_COMPATIBLE, MEMFD_LUO_FH_COMPATIBLE_V2 } from './memfd-luo-abi.js';
import { createMemfdLuoHandler, type MemfdHandlerFormats } from './memfd-luo-handler.js';
import { memfdRehearsal } from './memfd-rehearsal.js';

/**
 * A memfd kernel module whose LUO file handler reads and writes `formats`: the `memfd_create`
 * syscall, the {@link MEMFD_SERVICE} for later modules, and the handler. Its `reads` (the image's
 * note) are `formats.reads`. Without LUO (not loaded, or `liveupdate=off`) memfds work and cannot
 * be preserved, as when upstream's `late_initcall` finds LUO disabled.
 */
export function createMemfdModule(formats: MemfdHandlerFormats): KernelModule {
  return defineModule({
    name: 'memfd',
    reads: [...formats.reads],
    rehearse: memfdRehearsal,
    init(ctx) {
      const memfds = new MemfdFileSystem(ctx);
      registerMemfdCreate(ctx, memfds);
      ctx.services.provide(MEMFD_SERVICE, memfds);
      try {
        registerFileHandler(ctx, createMemfdLuoHandler(memfds, formats));
      } catch (error) {
        if (!KernelError.isInstance(error) || error.code !== 'EOPNOTSUPP') throw error;
        ctx.log.info('memfd: live update is not available; memfds cannot be preserved');
      }
    },
  });
}

/**
 * The memfd module (`@liveupdate/plugin-memfd`): its handler `"memfd-v3"` reads memfd-v3 and
 * memfd-v2 and writes either, the newest the next kernel reads. List it after
 * `@liveupdate/core/module` in the kernel image.
 */
export const memfdModule = createMemfdModule({
  reads: [MEMFD_LUO_FH_COMPATIBLE, MEMFD_LUO_FH_COMPATIBLE_V2],
  writes: [MEMFD_LUO_FH_COMPATIBLE, MEMFD_LUO_FH_COMPATIBLE_V2],
});

/**
 * The memfd module as shipped in kernel 6.18.0, before memfd-v3
 * (`@liveupdate/plugin-memfd/memfd-v2`): its handler `"memfd-v2"` reads and writes memfd-v2 only.
 * For kernel images that stand for that release, and for tests of updates to and from it.
 */
export const memfdV2Module = createMemfdModule({
  reads: [MEMFD_LUO_FH_COMPATIBLE_V2],
  writes: [MEMFD_LUO_FH_COMPATIBLE_V2],
});
