import { defineModule, type KernelModule } from '@liveupdate/kernel';
import { LiveUpdateOrchestrator, type LuoOptions } from './live-update-orchestrator.js';
import { LUO_ABI_VERSIONS, luoAbiCompatible } from './luo-abi.js';
import { LIVEUPDATE_SERVICE } from './liveupdate-service.js';

/**
 * The `liveupdate` kernel module of one kernel build: the orchestrator, `/dev/liveupdate`, its
 * reboot notifier and its check before a kexec. Its image note says which LUO ABI versions it
 * reads (`options.abi`).
 */
export function createLiveUpdateModule(options: LuoOptions = {}): KernelModule {
  const abi = options.abi ?? LUO_ABI_VERSIONS;
  return defineModule({
    name: 'liveupdate',
    reads: abi.map(luoAbiCompatible),
    init(ctx) {
      const luo = new LiveUpdateOrchestrator(ctx, { abi });
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
}
