/**
 * The `liveupdate` kernel module: list `@liveupdate/core/module` in a kernel image, before the
 * modules whose file handlers it serves.
 *
 * @module @liveupdate/core/module
 */
import { defineModule } from '@liveupdate/kernel';
import { LiveUpdateOrchestrator } from './live-update-orchestrator.js';
import { LUO_FDT_COMPATIBLE, LUO_FDT_COMPATIBLE_V1 } from './luo-abi.js';
import { LIVEUPDATE_SERVICE } from './liveupdate-service.js';

export default defineModule({
  name: 'liveupdate',
  // The LUO ABI versions this core reads: its own and the previous one.
  reads: [LUO_FDT_COMPATIBLE, LUO_FDT_COMPATIBLE_V1],
  init(ctx) {
    const luo = new LiveUpdateOrchestrator(ctx);
    ctx.services.provide(LIVEUPDATE_SERVICE, luo);
    if (!luo.enabled) return;
    ctx.vfs.registerCharDevice('/dev/liveupdate', luo.deviceOperations, { exclusive: true });
    ctx.kexec.registerCheck(luo.kexecCheck);
    ctx.rebootNotifiers.register({
      name: 'liveupdate',
      notify: () => luo.reboot(),
      abort: () => luo.abortReboot(),
    });
  },
});
