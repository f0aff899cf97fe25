import type { Machine } from '@liveupdate/machine';
import type { CacheProcess } from './cache-process.js';
import type { KvCacheCheck } from './kv-cache.js';
import { checkGuestMemory, type GuestMemoryCheck } from './vm-guest-memory.js';
import type { GuestNicState } from './vm-guest-nic.js';
import { checkGuestRing, type GuestRingCheck } from './vm-ring-check.js';
import { NIC_BDF, type VmmProcess } from './vm-process.js';

/** The host's services checked after a step: every key, the guest's ring and its memory. */
export interface HostCheck {
  readonly cache: KvCacheCheck;
  readonly verifyMs: number;
  readonly ring: GuestRingCheck;
  readonly guestMemory: GuestMemoryCheck;
}

/**
 * Check the cache's every key (yielding between slices, so the guest loop keeps draining its
 * ring meanwhile), then the guest's ring, which must have taken packets since `since` (its state
 * when it resumed, or when a refused update returned), then the guest's own memory.
 */
export async function checkHost(
  machine: Machine,
  cacheProcess: CacheProcess,
  vmm: VmmProcess,
  since: GuestNicState,
): Promise<HostCheck> {
  const start = performance.now();
  const cache = await cacheProcess.cache.verifyAllYielding();
  const verifyMs = performance.now() - start;
  const ring = await checkGuestRing(vmm.guest, since, () => machine.counters(NIC_BDF).drops);
  return { cache, verifyMs, ring, guestMemory: checkGuestMemory(vmm.guest) };
}
