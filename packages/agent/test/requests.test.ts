// The protocol's refusals in one kernel: who may say hello, what a service may ask for.
import { describe, expect, it, vi } from 'vitest';
import {
  AgentClient,
  LuoAgent,
  MessageReader,
  encodeFrame,
  sendMessage,
  type WireMessage,
} from '@liveupdate/agent';
import { AF_UNIX, SOCK_STREAM } from '@liveupdate/machine';
import { testkitStats } from '@liveupdate/testkit';
import { until } from '@liveupdate/vitest-config/wait-until';
import { boot, errnoOf, memfdWith, textOf } from './helpers.js';

async function agentAndService() {
  const harness = await boot();
  const agent = await LuoAgent.start(harness.process);
  return { harness, agent, spawn: () => harness.machine.spawn() };
}

describe('agent requests', () => {
  it('refuses a second connection of a connected service (EEXIST) and takes it after bye', async () => {
    const { spawn } = await agentAndService();
    const process = spawn();
    const first = await AgentClient.connect(process);
    const second = await AgentClient.connect(process);
    await first.hello('cache');
    expect(await errnoOf(second.hello('cache'))).toBe('EEXIST');
    await first.bye();
    expect(await second.hello('cache')).toEqual({ restored: false });
  });

  it("gives a service only its own entries: another service's name is ENOENT", async () => {
    const { spawn } = await agentAndService();
    const cache = spawn();
    const vmm = spawn();
    const cacheClient = await AgentClient.connect(cache);
    await cacheClient.hello('cache');
    await cacheClient.store('table', [await memfdWith(cache, 'cache data')]);
    const vmmClient = await AgentClient.connect(vmm);
    await vmmClient.hello('vmm');
    expect(await errnoOf(vmmClient.fetch('table'))).toBe('ENOENT');
    expect(await vmmClient.list()).toEqual([]);
    // The owner gets a new fd of its own for the same file.
    const [fd] = await cacheClient.fetch('table');
    expect(await textOf(cache, fd!, 10)).toBe('cache data');
  });

  it('answers pipelined requests in order, each with its own answer', async () => {
    const { spawn } = await agentAndService();
    const cache = spawn();
    const memfd = await memfdWith(cache, 'cache data');
    const client = await AgentClient.connect(cache);
    const events: string[] = [];
    const sendmsg = cache.sendmsg.bind(cache);
    vi.spyOn(cache, 'sendmsg').mockImplementation(async (...args) => {
      events.push('send');
      return sendmsg(...args);
    });
    const recvmsg = cache.recvmsg.bind(cache);
    vi.spyOn(cache, 'recvmsg').mockImplementation(async (...args) => {
      const received = await recvmsg(...args);
      events.push('answer');
      return received;
    });
    // None awaited before the next: a refusal, then a hello, a store and a list behind it.
    const early = client.list();
    const hello = client.hello('cache');
    const stored = client.store('table', [memfd]);
    const listed = client.list();
    expect(await errnoOf(early)).toBe('EACCES');
    expect(await hello).toEqual({ restored: false });
    await stored;
    expect(await listed).toEqual([{ name: 'table', order: 0, fds: 1 }]);
    // The second request went out before the first answer came back.
    expect(events.slice(0, 2)).toEqual(['send', 'send']);
    expect(events.filter((e) => e === 'send')).toHaveLength(4);
    await client.bye();
  });

  it('answers EACCES to requests before hello', async () => {
    const { spawn } = await agentAndService();
    const process = spawn();
    const client = await AgentClient.connect(process);
    expect(await errnoOf(client.fetch('table'))).toBe('EACCES');
    expect(await errnoOf(client.list())).toBe('EACCES');
    expect(await errnoOf(client.store('table', [await memfdWith(process, 'x')]))).toBe('EACCES');
  });

  it('refuses bad names, a second hello, a store whose fd count is wrong and a name stored twice', async () => {
    const { spawn } = await agentAndService();
    const process = spawn();
    const client = await AgentClient.connect(process);
    expect(await errnoOf(client.hello('luod'))).toBe('EINVAL');
    expect(await errnoOf(client.hello(''))).toBe('EINVAL');
    expect(await errnoOf(client.hello('x'.repeat(64)))).toBe('EINVAL');
    await client.hello('cache');
    expect(await errnoOf(client.hello('other'))).toBe('EISCONN');
    const memfd = await memfdWith(process, 'x');
    // A store that says 2 fds and carries 1, on a connection of its own spoken to raw.
    const raw = await process.socket(AF_UNIX, SOCK_STREAM);
    await process.connect(raw, '/run/luod.sock');
    const replies = new MessageReader(process, raw);
    await sendMessage(process, raw, { op: 'hello', service: 'raw' });
    expect((await replies.next())?.body).toEqual({ ok: true, restored: false });
    await sendMessage(process, raw, { op: 'store', name: 'table', order: 0, fds: 2 }, [memfd]);
    expect((await replies.next())?.body).toMatchObject({ error: 'EINVAL' });
    await sendMessage(process, raw, { op: 'list' });
    expect((await replies.next())?.body).toEqual({ ok: true, entries: [] });
    // A fetch whose finish is not a boolean, and a finish with no session from an update.
    await sendMessage(process, raw, { op: 'fetch', name: 'table', finish: 'no' });
    expect((await replies.next())?.body).toMatchObject({ error: 'EINVAL' });
    await sendMessage(process, raw, { op: 'finish' });
    expect((await replies.next())?.body).toMatchObject({ error: 'ENOENT' });
    await client.store('table', [memfd], { order: 0 });
    expect(await errnoOf(client.store('table', [memfd]))).toBe('EEXIST');
    expect(await errnoOf(client.store('other', [memfd], { order: -1 }))).toBe('EINVAL');
    expect((await client.list()).map((entry) => entry.name)).toEqual(['table']);
  });

  it('answers EOPNOTSUPP to update when its owner kexecs, and EBUSY to store once prepared', async () => {
    const { agent, spawn } = await agentAndService();
    const process = spawn();
    const client = await AgentClient.connect(process);
    await client.hello('cache');
    expect(await errnoOf(client.update())).toBe('EOPNOTSUPP');
    await agent.prepare();
    expect(await errnoOf(client.store('table', [await memfdWith(process, 'x')]))).toBe('EBUSY');
    await agent.abortUpdate();
    await client.store('table', [await memfdWith(process, 'x')]);
  });

  it('closes the fds of refused requests and of a closed connection: nothing leaks', async () => {
    const { harness, spawn } = await agentAndService();
    const process = spawn();
    const before = await testkitStats(harness.process);
    const memfd = await memfdWith(process, 'x');
    const raw = await process.socket(AF_UNIX, SOCK_STREAM);
    await process.connect(raw, '/run/luod.sock');
    const replies = new MessageReader(process, raw);
    const refused = async (body: WireMessage) => {
      await sendMessage(process, raw, body, [memfd, memfd]);
      return (await replies.next())?.body.error;
    };
    expect(await refused({ op: 'list' })).toBe('EINVAL'); // fds on a request that takes none
    expect(await refused({ op: 'store', name: 'table', fds: 2 })).toBe('EACCES'); // before hello
    await sendMessage(process, raw, { op: 'hello', service: 'cache' });
    expect((await replies.next())?.body.ok).toBe(true);
    expect(await refused({ op: 'store', name: 'table', fds: 1 })).toBe('EINVAL');
    expect(await refused({ op: 'store', name: 'table', order: 0.5, fds: 2 })).toBe('EINVAL');
    expect(await refused({ op: 'fetch', name: 'table' })).toBe('EINVAL');
    // And fds that came with a frame the connection closes in the middle of.
    const frame = encodeFrame({ op: 'store', name: 'late', fds: 1 });
    await process.sendmsg(raw, frame.subarray(0, 10), { rights: [memfd] });
    await process.close(raw);
    await process.close(memfd);
    const settled = async () => {
      const now = await testkitStats(harness.process);
      return now.openFiles === before.openFiles && now.framesAllocated === before.framesAllocated;
    };
    await until(settled, 'the open files and frames to come back to where they were');
  });

  it('closes a connection that sends a frame over the size limit', async () => {
    const { spawn } = await agentAndService();
    const process = spawn();
    const fd = await process.socket(AF_UNIX, SOCK_STREAM);
    await process.connect(fd, '/run/luod.sock');
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, 0xffff_ffff, true);
    await process.write(fd, header);
    // The agent hangs up without an answer: end of file.
    expect((await process.read(fd, 16)).length).toBe(0);
    expect(() => encodeFrame({ op: 'x'.repeat(70_000) })).toThrow(/EMSGSIZE/);
  });
});
