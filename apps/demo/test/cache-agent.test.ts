// The cache crosses a live update through the agent: it hands its memfd to the agent and fetches
// it back, and never opens /dev/liveupdate itself; the agents do.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Machine, Process } from '@liveupdate/machine';
import { cacheKernelImage } from '../src/cache-kernel-image.js';
import { CacheProcess } from '../src/cache-process.js';
import { planKvCache } from '../src/kv-cache.js';
import { BLACKOUT_PHASES, liveUpdateCache } from '../src/live-update-cache.js';

const MiB = 1024 ** 2;
const machines: Machine[] = [];

afterEach(async () => {
  vi.restoreAllMocks();
  await Promise.all(machines.splice(0).map((machine) => machine.shutdown()));
});

describe('the cache through the agent', () => {
  it('gets its table back from the next agent, never opening /dev/liveupdate', async () => {
    const machine = Machine.create({ ramBytes: 512 * MiB });
    machines.push(machine);
    await machine.boot(cacheKernelImage('6.18.0'));
    // Every process's opens and ioctls, by the pid that made them.
    const open = vi.spyOn(Process.prototype, 'open');
    const ioctl = vi.spyOn(Process.prototype, 'ioctl');
    const pidsThat = (spy: typeof open | typeof ioctl, path?: string): Set<number> =>
      new Set(
        spy.mock.contexts
          .filter((_, call) => path === undefined || spy.mock.calls[call]![0] === path)
          .map((process) => (process as Process).pid),
      );

    const layout = planKvCache(4 * MiB, 1000);
    const { cacheProcess } = await CacheProcess.create(machine, layout);
    const update = await liveUpdateCache(machine, cacheProcess, cacheKernelImage('6.18.1'));

    expect(update.firstKeyOk).toBe(true);
    expect(update.cacheProcess.cache.verifyAll()).toEqual({ verified: 1000, mismatches: 0 });
    // Both agents opened the device (it is how they keep and restore the session) ...
    const openers = pidsThat(open, '/dev/liveupdate');
    expect(openers).toContain(cacheProcess.agent.process.pid);
    expect(openers).toContain(update.cacheProcess.agent.process.pid);
    // ... and neither cache process did, nor issued any ioctl.
    for (const cache of [cacheProcess, update.cacheProcess]) {
      expect(openers).not.toContain(cache.process.pid);
      expect(pidsThat(ioctl)).not.toContain(cache.process.pid);
    }
    // The blackout now runs through the agent's restore, and it is measured.
    expect(Object.keys(update.phases)).toEqual(expect.arrayContaining([...BLACKOUT_PHASES]));
    expect(update.phases['agent-restore']).toBeGreaterThan(0);
  });
});
