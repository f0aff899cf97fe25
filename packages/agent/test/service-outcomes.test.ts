// After the kexec, each service gets its own fds or its own errno: a service that never comes
// back, a damaged file, and the order in which a service's files come back.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LiveUpdateDevice, LiveUpdateSession } from '@liveupdate/core';
import { KernelError, type Process } from '@liveupdate/machine';
import { AgentClient, LuoAgent } from '@liveupdate/agent';
import { findLuoFile, testkitStats, type LiveUpdateHarness } from '@liveupdate/testkit';
import { until } from '@liveupdate/vitest-config/wait-until';
import { boot, errnoOf, memfdWith, textOf } from './helpers.js';

afterEach(() => {
  vi.restoreAllMocks();
});

/** Services `names` each store a memfd "<name> data" as "table"; the agent prepares; kexec. */
async function updateWithServices(harness: LiveUpdateHarness, names: string[]): Promise<Process> {
  const agent = await LuoAgent.start(harness.process);
  for (const name of names) {
    const service = harness.machine.spawn();
    const client = await AgentClient.connect(service);
    await client.hello(name);
    await client.store('table', [await memfdWith(service, `${name} data`)]);
    await client.bye();
  }
  await agent.prepare();
  return harness.liveUpdate();
}

describe('a service that never comes back', () => {
  it('is reclaimed: files released, its next hello ETIMEDOUT once, the service that came back kept', async () => {
    const harness = await boot();
    const next = await updateWithServices(harness, ['gone', 'back']);
    const reclaimed: string[] = [];
    const agent = await LuoAgent.restore(next, { onReclaim: (name) => reclaimed.push(name) });
    const back = harness.machine.spawn();
    const backClient = await AgentClient.connect(back);
    expect(await backClient.hello('back')).toEqual({ restored: true });
    // The agent retrieved "gone"'s memfd too, right after the restore: it holds it for the service.
    await agent.settled();
    const held = await testkitStats(next);

    // The owner decides that waiting is over (as reclaimAfterMs does when it runs out).
    expect(await agent.reclaim()).toEqual(['gone']);
    expect(reclaimed).toEqual(['gone']);
    // Finished: "gone"'s memfd is closed and its frame free, nothing is left reserved, and LUO
    // has no such session for anyone.
    const after = await testkitStats(next);
    expect(after.framesFree).toBeGreaterThan(held.framesFree);
    expect(after.openFiles).toBeLessThan(held.openFiles);
    expect(after.khoUnrestoredFrames).toBe(0);
    const device = await LiveUpdateDevice.open(next);
    expect(await errnoOf(device.retrieveSession('gone'))).toBe('ENOENT');
    await device.close();
    expect(agent.services.get('gone')).toEqual([]);

    // "back" came back in time: its fd is still there, its own.
    const [fd] = await backClient.fetch('table');
    expect(await textOf(back, fd!, 9)).toBe('back data');
    // "gone" comes back late: told once, then it starts afresh with nothing.
    const late = harness.machine.spawn();
    const lateClient = await AgentClient.connect(late);
    expect(await errnoOf(lateClient.hello('gone'))).toBe('ETIMEDOUT');
    expect(await lateClient.hello('gone')).toEqual({ restored: false });
    expect(await errnoOf(lateClient.fetch('table'))).toBe('ENOENT');
    // Nothing is left to reclaim.
    expect(await agent.reclaim()).toEqual([]);
    await agent.close();
  });

  it('is reclaimed by itself once reclaimAfterMs runs out', async () => {
    const harness = await boot();
    const next = await updateWithServices(harness, ['gone']);
    const reclaimed: string[] = [];
    const agent = await LuoAgent.restore(next, {
      reclaimAfterMs: 20,
      onReclaim: (name) => reclaimed.push(name),
    });
    await until(() => reclaimed.length > 0, 'the agent to reclaim the service "gone"');
    expect(reclaimed).toEqual(['gone']);
    expect((await testkitStats(next)).khoUnrestoredFrames).toBe(0);
    const late = await AgentClient.connect(harness.machine.spawn());
    const hello = await late.hello('gone').then(
      () => 'answered',
      (error: { code?: string; message?: string }) => `${error.code}: ${error.message}`,
    );
    expect(hello).toMatch(/^ETIMEDOUT: .*did not say hello within 20 ms of the restore/);
    await agent.close();
  });

  it('refuses a reclaimAfterMs that is not a number of milliseconds', async () => {
    const harness = await boot();
    await expect(LuoAgent.restore(harness.process, { reclaimAfterMs: -1 })).rejects.toThrow(
      'reclaimAfterMs must be a finite number of milliseconds ≥ 0, not -1',
    );
  });
});

describe('a service whose file is damaged in the handover', () => {
  it('gets EIO for that entry; another service storing the same name gets its own fd', async () => {
    const harness = await boot({
      onHandover: ({ memory, khoFdtPhys }) => {
        // Garble the memfd state of "broken"'s file, not resealed: LUO's data_crc meets it.
        const { data } = findLuoFile(memory, khoFdtPhys!, 'broken', 1n);
        memory.writeU32(Number(data), 0xdeadbeef);
      },
    });
    const next = await updateWithServices(harness, ['broken', 'sound']);
    await LuoAgent.restore(next);
    const service = harness.machine.spawn();

    const broken = await AgentClient.connect(service);
    expect(await broken.hello('broken')).toEqual({ restored: true });
    expect(await broken.list()).toEqual([{ name: 'table', order: 0, fds: 1, error: 'EIO' }]);
    expect(await errnoOf(broken.fetch('table'))).toBe('EIO');
    expect(await errnoOf(broken.fetch('table'))).toBe('EIO');

    const sound = await AgentClient.connect(service);
    expect(await sound.hello('sound')).toEqual({ restored: true });
    const [fd] = await sound.fetch('table');
    expect(await textOf(service, fd!, 10)).toBe('sound data');
  });
});

describe('order within a service', () => {
  it('retrieves a memfd, iommufd and vfio set in their order, not the order stored', async () => {
    const harness = await boot();
    const agent = await LuoAgent.start(harness.process);
    const vmm = harness.machine.spawn();
    const client = await AgentClient.connect(vmm);
    await client.hello('vm0');
    // Memfds stand in for the three: the agent sees fds and orders, not what the files are.
    // Stored last-first, so tokens 1, 2, 3 are vfio, iommufd, memfd.
    await client.store('vfio', [await memfdWith(vmm, 'vfio')], { order: 2 });
    await client.store('iommufd', [await memfdWith(vmm, 'iommufd')], { order: 1 });
    await client.store('memfd', [await memfdWith(vmm, 'memfd')], { order: 0 });
    await agent.prepare();
    const next = await harness.liveUpdate();

    const retrieveFd = vi.spyOn(LiveUpdateSession.prototype, 'retrieveFd');
    await LuoAgent.restore(next);
    const newVmm = harness.machine.spawn();
    const newClient = await AgentClient.connect(newVmm);
    await newClient.hello('vm0');
    // The manifest's (token 1 of luod) first, then the service's files by their order.
    expect(retrieveFd.mock.calls.map(([token]) => Number(token))).toEqual([1, 3, 2, 1]);
    // Fetched in any order, each is its own file.
    for (const name of ['vfio', 'memfd', 'iommufd']) {
      const [fd] = await newClient.fetch(name);
      expect(await textOf(newVmm, fd!, name.length)).toBe(name);
    }
  });
});

/** Whether LUO still has `name`'s session, retrieved (`EINVAL`), or not at all (`ENOENT`). */
async function sessionState(process: Process, name: string): Promise<string> {
  const device = await LiveUpdateDevice.open(process);
  try {
    return await errnoOf(device.retrieveSession(name));
  } finally {
    await device.close();
  }
}

describe('the finish after the last fetch', () => {
  it('waits until the service next speaks: its bye is answered once the session is finished', async () => {
    const harness = await boot();
    const next = await updateWithServices(harness, ['cache']);
    const agent = await LuoAgent.restore(next);
    const cache = harness.machine.spawn();
    const client = await AgentClient.connect(cache);
    expect(await client.hello('cache')).toEqual({ restored: true });
    const [fd] = await client.fetch('table');
    // Every entry is fetched; the finish is owed, not done: LUO still has the session, retrieved.
    expect(await sessionState(next, 'cache')).toBe('EINVAL');
    expect(await textOf(cache, fd!, 10)).toBe('cache data');
    await client.bye();
    expect(await sessionState(next, 'cache')).toBe('ENOENT');
    expect(await textOf(cache, fd!, 10)).toBe('cache data');
    await agent.close();
  });

  it('is done when the service hangs up without a word', async () => {
    const harness = await boot();
    const next = await updateWithServices(harness, ['cache']);
    const agent = await LuoAgent.restore(next);
    const cache = harness.machine.spawn();
    const client = await AgentClient.connect(cache);
    await client.hello('cache');
    await client.fetch('table');
    expect(await sessionState(next, 'cache')).toBe('EINVAL');
    await client.close();
    await until(
      async () => (await sessionState(next, 'cache')) === 'ENOENT',
      'the agent to finish the session of a service that hung up',
    );
    expect(agent.services).toEqual(new Map([['cache', []]]));
    await agent.close();
  });
});

describe('a service that finishes its session itself', () => {
  it('keeps the session after fetching with finish: false until its finish, which a refusal leaves as it was', async () => {
    const harness = await boot();
    const next = await updateWithServices(harness, ['vm0']);
    const agent = await LuoAgent.restore(next);
    const vmm = harness.machine.spawn();
    const client = await AgentClient.connect(vmm);
    expect(await client.hello('vm0')).toEqual({ restored: true });
    const [fd] = await client.fetch('table', { finish: false });
    // Every entry is fetched, and yet the session is not finished: LUO still has it, retrieved.
    expect(await sessionState(next, 'vm0')).toBe('EINVAL');
    expect(await client.list()).toEqual([{ name: 'table', order: 0, fds: 1 }]);

    // LUO refuses (as iommufd does while a restored HWPT is in use): the service is told, and
    // nothing changes; it can fetch again and finish later.
    const refusal = vi
      .spyOn(LiveUpdateSession.prototype, 'finish')
      .mockRejectedValueOnce(new KernelError('EBUSY', 'a handler is not done'));
    expect(await errnoOf(client.finish())).toBe('EBUSY');
    refusal.mockRestore();
    const [again] = await client.fetch('table', { finish: false });
    expect(await textOf(vmm, again!, 8)).toBe('vm0 data');

    await client.finish();
    expect(await sessionState(next, 'vm0')).toBe('ENOENT');
    expect(await client.list()).toEqual([]);
    // The service's fds are its own and outlive the finish; a second finish has nothing to finish.
    expect(await textOf(vmm, fd!, 8)).toBe('vm0 data');
    expect(await errnoOf(client.finish())).toBe('ENOENT');
    await client.bye();
    await agent.close();
  });
});
