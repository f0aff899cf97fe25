/**
 * The `liveupdate` kernel module: list `@liveupdate/core/module` in a kernel image, before the
 * modules whose file handlers it serves.
 *
 * @module @liveupdate/core/module
 */
import { defineModule } from '@liveupdate/kernel';
import { LiveUpdateOrchestrator } from './live-update-orchestrator.js';
import { LIVEUPDATE_SERVICE } from './liveupdate-service.js';

export default defineModule({
  name: 'liveupdate',
  init(ctx) {
    const luo = new LiveUpdateOrchestrator(ctx);
    ctx.services.provide(LIVEUPDATE_SERVICE, luo);
    if (!luo.enabled) return;
    ctx.vfs.registerCharDevice('/dev/liveupdate', luo.deviceOperations, { exclusive: true });
    ctx.rebootNotifiers.register({
      name: 'liveupdate',
      notify: () => luo.reboot(),
      abort: () => luo.abortReboot(),
    });
  },
});
