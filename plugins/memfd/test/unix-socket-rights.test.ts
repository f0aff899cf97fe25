import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import { AF_UNIX, MSG_DONTWAIT, PAGE_SIZE, SOCK_STREAM } from '@liveupdate/machine';
import { bootedMachine, errnoOf, expectBytes, pattern, stats, testImage } from './helpers.js';

const SIZE = 64 * PAGE_SIZE;
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('a memfd passed over a unix socket (SCM_RIGHTS)', () => {
  it('reaches another process, whose fd keeps working after the sender closes its own', async () => {
    const machine = await bootedMachine(testImage('6.18.0', { luo: false }));
    const service = machine.spawn();
    const agent = machine.spawn();
    const listener = await agent.socket(AF_UNIX, SOCK_STREAM);
    await agent.bind(listener, '/run/agent.sock');
    await agent.listen(listener, 4);
    const client = await service.socket(AF_UNIX, SOCK_STREAM);
    await service.connect(client, '/run/agent.sock');
    const connection = await agent.accept(listener);

    const memfd = await service.memfdCreate('cache');
    const data = pattern(SIZE, 3);
    await service.pwrite(memfd, data, 0);
    await service.sendmsg(client, text('cache'), { rights: [memfd] });
    await service.close(memfd);

    const { data: name, rights } = await agent.recvmsg(connection, 64);
    expect(new TextDecoder().decode(name)).toBe('cache');
    expect(rights).toHaveLength(1);
    expectBytes(await agent.pread(rights[0]!, SIZE, 0), data);
    // And back: what the agent writes, the service reads through the fd it gets back.
    await agent.pwrite(rights[0]!, text('agent'), 0);
    await agent.sendmsg(connection, text('back'), { rights: rights });
    const back = await service.recvmsg(client, 64);
    expect(new TextDecoder().decode(await service.pread(back.rights[0]!, 5, 0))).toBe('agent');
  });

  it('frees the frames of a memfd in flight that is never received, when the socket dies', async () => {
    const machine = await bootedMachine(testImage('6.18.0', { luo: false }));
    const process = machine.spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const before = (await stats(process)).pages.free;
    const memfd = await process.memfdCreate('in-flight');
    await process.pwrite(memfd, pattern(SIZE, 5), 0);
    await process.sendmsg(a, text('x'), { rights: [memfd] });
    await process.close(memfd);
    // The socket holds the file: its frames stay allocated.
    expect((await stats(process)).pages.free).toBeLessThanOrEqual(before - SIZE / PAGE_SIZE);
    await process.close(b);
    expect((await stats(process)).pages.free).toBe(before);
    await process.close(a);
  });
});

describe('a unix socket and LUO', () => {
  it('cannot be preserved: no handler takes it (ENOENT), and the socket still works', async () => {
    const machine = await bootedMachine(testImage('6.18.0'));
    const process = machine.spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const device = await LiveUpdateDevice.open(process);
    const session = await device.createSession('sockets');
    expect(await errnoOf(session.preserveFd(a, 1n))).toBe('ENOENT');
    await process.write(a, text('alive'));
    expect(
      new TextDecoder().decode(
        await process.recvmsg(b, 16, { flags: MSG_DONTWAIT }).then((m) => m.data),
      ),
    ).toBe('alive');
  });
});
