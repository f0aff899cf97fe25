// A service's fds cross a live update through the agent: the service only talks to the socket.
import { describe, expect, it, vi } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { AF_UNIX, SOCK_STREAM, type Process } from '@liveupdate/machine';
import { AgentClient, DEFAULT_AGENT_PATH, LuoAgent } from '@liveupdate/agent';
import { testkitStats } from '@liveupdate/testkit';
import { until } from '@liveupdate/vitest-config/wait-until';
import { boot, errnoOf, memfdWith, textOf } from './helpers.js';

const CONTENT = 'the cache keeps its keys in this memfd';

/** A machine whose agent preserved `CONTENT` for the service `cache`, after the live update. */
async function updatedWithCache() {
  const harness = await boot();
  const agent = await LuoAgent.start(harness.process);
  const service = harness.machine.spawn();
  const client = await AgentClient.connect(service);
  await client.hello('cache');
  await client.store('table', [await memfdWith(service, CONTENT)]);
  await client.bye();
  await agent.prepare();
  return { harness, next: await harness.liveUpdate() };
}

describe('the agent across a live update', () => {
  it('gives a reconnecting service the memfd it stored, with the same bytes', async () => {
    const harness = await boot();
    const agent = await LuoAgent.start(harness.process);
    const service = harness.machine.spawn();
    const open = vi.spyOn(service, 'open');
    const ioctl = vi.spyOn(service, 'ioctl');
    const memfd = await memfdWith(service, CONTENT);
    const client = await AgentClient.connect(service);
    expect(await client.hello('cache')).toEqual({ restored: false });
    await client.store('table', [memfd], { order: 0 });
    await service.close(memfd);
    await client.bye();

    await agent.prepare();
    const next = await harness.liveUpdate();

    const restored = await LuoAgent.restore(next);
    expect(restored.services).toEqual(new Map([['cache', ['table']]]));
    const newService = harness.machine.spawn();
    const newOpen = vi.spyOn(newService, 'open');
    const newIoctl = vi.spyOn(newService, 'ioctl');
    const newClient = await AgentClient.connect(newService);
    expect(await newClient.hello('cache')).toEqual({ restored: true });
    expect(await newClient.list()).toEqual([{ name: 'table', order: 0, fds: 1 }]);
    const [fd] = await newClient.fetch('table');
    expect(await textOf(newService, fd!, CONTENT.length)).toBe(CONTENT);
    // Everything fetched: the session is finished and the agent forgot the entries.
    expect(await errnoOf(newClient.fetch('table'))).toBe('ENOENT');
    await newClient.bye();
    // The file is the service's own now: it outlives the agent.
    await restored.close();
    expect(await textOf(newService, fd!, CONTENT.length)).toBe(CONTENT);

    // Services never touch /dev/liveupdate: sockets and the memfd only.
    for (const spy of [open, ioctl, newOpen, newIoctl]) expect(spy).not.toHaveBeenCalled();
  });

  it("live-updates on an update request and lists a service's entries by order", async () => {
    const harness = await boot();
    let updating: Promise<Process> | undefined;
    const errors: unknown[] = [];
    await LuoAgent.start(harness.process, {
      path: '/run/agent-test.sock',
      update: () => (updating = harness.liveUpdate()),
      onError: (error) => errors.push(error),
    });
    const vmm = harness.machine.spawn();
    const client = await AgentClient.connect(vmm, '/run/agent-test.sock');
    await client.hello('vm0');
    // Stored in the reverse of their order: the list and the retrieve follow order, not arrival.
    const second = await memfdWith(vmm, 'second');
    const first = await memfdWith(vmm, 'first');
    const pair = [await memfdWith(vmm, 'pair-a'), await memfdWith(vmm, 'pair-b')];
    await client.store('device', [second], { order: 2 });
    await client.store('ram', [first], { order: 0 });
    await client.store('pair', pair, { order: 1 });
    await client.update();
    await until(() => updating !== undefined, 'the agent to start the update after answering');
    const next = await updating!;
    expect(errors).toEqual([]);

    await LuoAgent.restore(next, { path: '/run/agent-test.sock' });
    const newVmm = harness.machine.spawn();
    const newClient = await AgentClient.connect(newVmm, '/run/agent-test.sock');
    await newClient.hello('vm0');
    expect((await newClient.list()).map((e) => [e.name, e.order, e.fds])).toEqual([
      ['ram', 0, 1],
      ['pair', 1, 2],
      ['device', 2, 1],
    ]);
    const fds = await newClient.fetch('pair');
    expect(await Promise.all(fds.map((fd) => textOf(newVmm, fd, 6)))).toEqual(['pair-a', 'pair-b']);
    expect(await textOf(newVmm, (await newClient.fetch('device'))[0]!, 6)).toBe('second');
    expect(await textOf(newVmm, (await newClient.fetch('ram'))[0]!, 5)).toBe('first');
  });

  it("takes a service's fds again after it fetched them, for the next live update", async () => {
    const harness = await boot();
    await (await LuoAgent.start(harness.process)).prepare();
    let process = await harness.liveUpdate();
    let agent = await LuoAgent.restore(process);
    for (const round of ['first', 'second']) {
      const service = harness.machine.spawn();
      const client = await AgentClient.connect(service);
      await client.hello('cache');
      await client.store('table', [await memfdWith(service, `${round} update`)]);
      await agent.prepare();
      process = await harness.liveUpdate();
      agent = await LuoAgent.restore(process);
      const newService = harness.machine.spawn();
      const newClient = await AgentClient.connect(newService);
      expect(await newClient.hello('cache')).toEqual({ restored: true });
      const [fd] = await newClient.fetch('table');
      expect(await textOf(newService, fd!, round.length + 7)).toBe(`${round} update`);
      await newClient.bye();
    }
  });

  it('keeps a store that races prepare in the manifest when it answered ok', async () => {
    const harness = await boot();
    const agent = await LuoAgent.start(harness.process);
    const service = harness.machine.spawn();
    const client = await AgentClient.connect(service);
    await client.hello('cache');
    const memfd = await memfdWith(service, CONTENT);
    // Which comes first is up to the scheduling; what each answer promises is not.
    const stored = client.store('table', [memfd]).then(
      () => 'ok',
      (error: unknown) => errnoOf(Promise.reject(error)),
    );
    await agent.prepare();
    const outcome = await stored;
    expect(['ok', 'EBUSY']).toContain(outcome);
    const restored = await LuoAgent.restore(await harness.liveUpdate());
    expect(restored.services.get('cache') ?? []).toEqual(outcome === 'ok' ? ['table'] : []);
  });

  it("retrieves the services' files and finishes luod right after it listens, before any hello", async () => {
    const { harness, next } = await updatedWithCache();
    expect((await testkitStats(next)).khoUnrestoredFolios).toBeGreaterThan(0);

    const restored = await LuoAgent.restore(next);
    await restored.settled();
    // Nothing of the handover is left to restore: the manifest's memfd and the service's are
    // retrieved, and luod is finished and closed, so nobody can retrieve it again.
    expect((await testkitStats(next)).khoUnrestoredFolios).toBe(0);
    const other = harness.machine.spawn();
    const device = await LiveUpdateDevice.open(other);
    expect(await errnoOf(device.retrieveSession('luod'))).toBe('ENOENT');
    await device.close();
    // The service is served from what was retrieved.
    const newService = harness.machine.spawn();
    const newClient = await AgentClient.connect(newService);
    expect(await newClient.hello('cache')).toEqual({ restored: true });
    const [fd] = await newClient.fetch('table');
    expect(await textOf(newService, fd!, CONTENT.length)).toBe(CONTENT);
    await newClient.bye();
    await restored.close();
  });

  it('finishes the session of a service that never came back when the agent closes', async () => {
    const harness = await boot();
    const agent = await LuoAgent.start(harness.process);
    const service = harness.machine.spawn();
    const client = await AgentClient.connect(service);
    await client.hello('gone');
    await client.store('table', [await memfdWith(service, CONTENT)]);
    await agent.prepare();
    const next = await harness.liveUpdate();

    const restored = await LuoAgent.restore(next);
    expect(restored.services.get('gone')).toEqual(['table']);
    await restored.settled();
    // Retrieved for the service, which never asked: the agent holds the memfd.
    const held = await testkitStats(next);
    expect(held.khoUnrestoredFrames).toBe(0);
    await restored.close();
    // Finished and closed: the memfd's frame is free again, and LUO no longer has the session.
    const after = await testkitStats(next);
    expect(after.framesFree).toBeGreaterThan(held.framesFree);
    expect(after.openFiles).toBeLessThan(held.openFiles);
    const device = await LiveUpdateDevice.open(next);
    expect(await errnoOf(device.retrieveSession('gone'))).toBe('ENOENT');
    await device.close();
  });
});

describe('onListening', () => {
  it('is told before the restore resolves; a service that connects then is served', async () => {
    const { harness, next } = await updatedWithCache();
    const service = harness.machine.spawn();
    let early: Promise<{ hello: unknown; text: string }> | undefined;
    const restored = await LuoAgent.restore(next, {
      onListening: () => {
        // The manifest is not read yet: the hello waits in the backlog, then for the retrieve.
        early = (async () => {
          const client = await AgentClient.connect(service);
          const hello = await client.hello('cache');
          const [fd] = await client.fetch('table');
          return { hello, text: await textOf(service, fd!, CONTENT.length) };
        })();
      },
    });
    expect(early).toBeDefined();
    expect(await early).toEqual({ hello: { restored: true }, text: CONTENT });
    await restored.close();
  });

  it('resets the connections it let in when the restore then fails', async () => {
    // No agent preserved anything: the restore fails with ENOENT after the socket listened.
    const harness = await boot();
    const next = await harness.liveUpdate();
    const service = harness.machine.spawn();
    const fd = await service.socket(AF_UNIX, SOCK_STREAM);
    let connected: Promise<void> | undefined;
    const restore = LuoAgent.restore(next, {
      onListening: () => {
        connected = service.connect(fd, DEFAULT_AGENT_PATH);
      },
    });
    expect(await errnoOf(restore)).toBe('ENOENT');
    // Taken into the backlog, never accepted: the listener's close reset the connection, so
    // nothing can be sent on it.
    await connected;
    expect(await errnoOf(service.write(fd, new Uint8Array([1])))).toBe('EPIPE');
    // And the path is gone: a new agent listens there.
    const fresh = await LuoAgent.start(next);
    await fresh.close();
  });

  it('is told by start once it listens; what it throws goes to onError', async () => {
    const harness = await boot();
    const errors: unknown[] = [];
    const thrown = new Error('the owner failed to start a service');
    let told = 0;
    const agent = await LuoAgent.start(harness.process, {
      onListening: () => {
        told++;
        throw thrown;
      },
      onError: (error) => errors.push(error),
    });
    expect(told).toBe(1);
    expect(errors).toEqual([thrown]);
    // The agent serves regardless.
    const client = await AgentClient.connect(harness.machine.spawn());
    expect(await client.hello('cache')).toEqual({ restored: false });
    await client.bye();
    await agent.close();
  });
});
