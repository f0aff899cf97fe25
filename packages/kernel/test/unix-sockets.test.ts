import { describe, expect, it } from 'vitest';
import {
  AF_INET6,
  AF_UNIX,
  FD_CLOEXEC,
  F_GETFD,
  F_GETFL,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  O_NONBLOCK,
  O_RDWR,
  SCM_MAX_FD,
  SEEK_CUR,
  SEEK_SET,
  SHUT_RD,
  SHUT_WR,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCK_SEQPACKET,
  SOCK_STREAM,
  type Process,
} from '@liveupdate/machine';
import { bootedMachine, errnoOf, kexec, pending, probe, testImage } from './helpers.js';

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

/** `UNIX_STREAM_BUFFER`: what a receive queue holds before writers wait. */
const BUFFER = 212_992;

interface PageStats {
  pages: { free: number };
}

/** A listening socket at `path` in `server`, and a client of `client` connected to it, accepted. */
async function connection(
  server: Process,
  client: Process,
  path = '/run/agent.sock',
): Promise<{ listener: number; accepted: number; connected: number }> {
  const listener = await server.socket(AF_UNIX, SOCK_STREAM);
  await server.bind(listener, path);
  await server.listen(listener, 8);
  const connected = await client.socket(AF_UNIX, SOCK_STREAM);
  await client.connect(connected, path);
  const accepted = await server.accept(listener);
  return { listener, accepted, connected };
}

const released = (process: Process): Promise<unknown> => process.syscall('test_devices_released');

describe('AF_UNIX stream sockets', () => {
  it('socketpair gives two connected ends carrying bytes both ways, with SOCK_CLOEXEC and SOCK_NONBLOCK', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK);
    expect(await process.fcntl(a, F_GETFD)).toBe(FD_CLOEXEC);
    expect(await process.fcntl(b, F_GETFL)).toBe(O_RDWR | O_NONBLOCK);
    expect(await process.write(a, text('ping'))).toBe(4);
    expect(await process.write(a, text('!'))).toBe(1);
    // A stream: two writes without files come out as one read.
    expect(str(await process.read(b, 100))).toBe('ping!');
    await process.write(b, text('pong'));
    expect(str(await process.read(a, 2))).toBe('po');
    expect(str(await process.read(a, 2))).toBe('ng');
    expect(await errnoOf(process.read(a, 1))).toEqual(['EAGAIN', 11]);
    expect(await errnoOf(process.lseek(a, 0))).toEqual(['ESPIPE', 29]);
    const [c] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    expect(await process.fcntl(c, F_GETFD)).toBe(0);
    expect(await process.fcntl(c, F_GETFL)).toBe(O_RDWR);
  });

  it('socket and socketpair refuse other families, types, protocols and flags as Linux does', async () => {
    const process = (await bootedMachine()).spawn();
    for (const call of [process.socket.bind(process), process.socketpair.bind(process)]) {
      expect(await errnoOf(call(AF_INET6, SOCK_STREAM))).toEqual(['EAFNOSUPPORT', 97]);
      expect(await errnoOf(call(AF_UNIX, SOCK_DGRAM))).toEqual(['ESOCKTNOSUPPORT', 94]);
      expect(await errnoOf(call(AF_UNIX, SOCK_SEQPACKET))).toEqual(['ESOCKTNOSUPPORT', 94]);
      expect(await errnoOf(call(AF_UNIX, 12))).toEqual(['EINVAL', 22]);
      expect(await errnoOf(call(AF_UNIX, SOCK_STREAM | 0x100))).toEqual(['EINVAL', 22]);
      expect(await errnoOf(call(AF_UNIX, SOCK_STREAM, 6))).toEqual(['EPROTONOSUPPORT', 93]);
    }
    // protocol may name the family itself (PF_UNIX).
    expect(await process.socket(AF_UNIX, SOCK_STREAM, AF_UNIX)).toBeGreaterThanOrEqual(0);
  });

  it('getsockname gives the path a socket is bound to, an empty one when unnamed', async () => {
    const process = (await bootedMachine()).spawn();
    const fd = await process.socket(AF_UNIX, SOCK_STREAM);
    expect(await process.getsockname(fd)).toEqual({ family: AF_UNIX, path: '' });
    await process.bind(fd, 'run/named.sock');
    expect(await process.getsockname(fd)).toEqual({ family: AF_UNIX, path: '/run/named.sock' });
    const file = await process.open('/dev/null');
    expect(await errnoOf(process.getsockname(file))).toEqual(['ENOTSOCK', 88]);
  });

  it('connects a client to a listener at a path; the connection carries bytes both ways', async () => {
    const machine = await bootedMachine();
    const agent = machine.spawn();
    const service = machine.spawn();
    const { accepted, connected } = await connection(agent, service);
    await service.write(connected, text('hello agent'));
    expect(str(await agent.read(accepted, 64))).toBe('hello agent');
    await agent.write(accepted, text('hello service'));
    expect(str(await service.read(connected, 64))).toBe('hello service');
  });

  it('bind, listen, connect and accept fail with the Linux errno', async () => {
    const process = (await bootedMachine()).spawn();
    const null_ = await process.open('/dev/null');
    const s = await process.socket(AF_UNIX, SOCK_STREAM);
    expect(await errnoOf(process.bind(null_, '/x'))).toEqual(['ENOTSOCK', 88]);
    expect(await errnoOf(process.accept(null_))).toEqual(['ENOTSOCK', 88]);
    expect(await errnoOf(process.listen(s, 1))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.accept(s))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.bind(s, '/dev/null'))).toEqual(['EADDRINUSE', 98]);
    expect(await errnoOf(process.bind(s, '/' + 'a'.repeat(107)))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.bind(s, ''))).toEqual(['EINVAL', 22]);
    await process.bind(s, '/' + 'a'.repeat(106));
    expect(await errnoOf(process.bind(s, '/other'))).toEqual(['EINVAL', 22]);
    const t = await process.socket(AF_UNIX, SOCK_STREAM);
    expect(await errnoOf(process.bind(t, '/' + 'a'.repeat(106)))).toEqual(['EADDRINUSE', 98]);

    const client = await process.socket(AF_UNIX, SOCK_STREAM);
    expect(await errnoOf(process.connect(client, '/missing'))).toEqual(['ENOENT', 2]);
    expect(await errnoOf(process.connect(client, '/dev/null'))).toEqual(['ECONNREFUSED', 111]);
    // Bound but not listening.
    expect(await errnoOf(process.connect(client, '/' + 'a'.repeat(106)))).toEqual([
      'ECONNREFUSED',
      111,
    ]);
    await process.bind(t, 'relative.sock');
    await process.listen(t, 4);
    expect(await errnoOf(process.connect(t, '/relative.sock'))).toEqual(['EINVAL', 22]);
    await process.connect(client, '/relative.sock');
    expect(await errnoOf(process.connect(client, '/relative.sock'))).toEqual(['EISCONN', 106]);
    expect(await errnoOf(process.listen(client, 4))).toEqual(['EINVAL', 22]);
    const [p] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    expect(await errnoOf(process.connect(p, '/relative.sock'))).toEqual(['EISCONN', 106]);
    expect(await errnoOf(process.accept(t, 0x1))).toEqual(['EINVAL', 22]);
    // A socket node is reached with connect, not open.
    expect(await errnoOf(process.open('/relative.sock'))).toEqual(['ENXIO', 6]);
  });

  it('a bound path outlives its socket until unlink, and unlink touches only socket nodes', async () => {
    const process = (await bootedMachine()).spawn();
    const listener = await process.socket(AF_UNIX, SOCK_STREAM);
    await process.bind(listener, '/run/a.sock');
    await process.listen(listener, 1);
    await process.close(listener);
    const client = await process.socket(AF_UNIX, SOCK_STREAM);
    expect(await errnoOf(process.connect(client, '/run/a.sock'))).toEqual(['ECONNREFUSED', 111]);
    const again = await process.socket(AF_UNIX, SOCK_STREAM);
    expect(await errnoOf(process.bind(again, '/run/a.sock'))).toEqual(['EADDRINUSE', 98]);
    await process.unlink('/run/a.sock');
    expect(await errnoOf(process.connect(client, '/run/a.sock'))).toEqual(['ENOENT', 2]);
    expect(await errnoOf(process.unlink('/run/a.sock'))).toEqual(['ENOENT', 2]);
    expect(await errnoOf(process.unlink('/dev/null'))).toEqual(['EPERM', 1]);
    await process.bind(again, '/run/a.sock');
    await process.listen(again, 1);
    await process.connect(client, '/run/a.sock');
    expect(await process.accept(again, SOCK_NONBLOCK | SOCK_CLOEXEC)).toBeGreaterThan(0);
  });

  it('accept waits for a connection, and a client may write before it is accepted', async () => {
    const machine = await bootedMachine();
    const agent = machine.spawn();
    const service = machine.spawn();
    const listener = await agent.socket(AF_UNIX, SOCK_STREAM);
    await agent.bind(listener, '/agent');
    await agent.listen(listener, 4);
    const nonblocking = await agent.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK);
    await agent.bind(nonblocking, '/agent-nb');
    await agent.listen(nonblocking, 4);
    expect(await errnoOf(agent.accept(nonblocking))).toEqual(['EAGAIN', 11]);
    const accept = agent.accept(listener, SOCK_CLOEXEC);
    expect(await pending(agent, accept)).toBe(true);
    const client = await service.socket(AF_UNIX, SOCK_STREAM);
    await service.connect(client, '/agent');
    expect(await service.write(client, text('early'))).toBe(5);
    const fd = await accept;
    expect(await agent.fcntl(fd, F_GETFD)).toBe(FD_CLOEXEC);
    expect(str(await agent.read(fd, 16))).toBe('early');
  });

  it('connect waits while the backlog is full, or fails with EAGAIN when non-blocking', async () => {
    const process = (await bootedMachine()).spawn();
    const listener = await process.socket(AF_UNIX, SOCK_STREAM);
    await process.bind(listener, '/busy');
    await process.listen(listener, 0);
    // As in Linux, a backlog of n holds n + 1 connections.
    await process.connect(await process.socket(AF_UNIX, SOCK_STREAM), '/busy');
    const late = await process.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK);
    expect(await errnoOf(process.connect(late, '/busy'))).toEqual(['EAGAIN', 11]);
    const waiting = process.connect(await process.socket(AF_UNIX, SOCK_STREAM), '/busy');
    expect(await pending(process, waiting)).toBe(true);
    await process.accept(listener);
    await waiting;
    // A listener that goes away refuses those still waiting.
    const refused = process.connect(await process.socket(AF_UNIX, SOCK_STREAM), '/busy');
    expect(await pending(process, refused)).toBe(true);
    await process.close(listener);
    expect(await errnoOf(refused)).toEqual(['ECONNREFUSED', 111]);
  });

  it('a read waits for data; after the peer closes, reads drain then see EOF and writes get EPIPE', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const read = process.read(a, 10);
    expect(await pending(process, read)).toBe(true);
    await process.write(b, text('xyz'));
    expect(str(await read)).toBe('xyz');
    await process.write(b, text('last'));
    await process.close(b);
    expect(str(await process.read(a, 10))).toBe('last');
    expect((await process.read(a, 10)).length).toBe(0);
    expect((await process.recvmsg(a, 10)).data.length).toBe(0);
    expect(await errnoOf(process.write(a, text('x')))).toEqual(['EPIPE', 32]);
  });

  it('a peer that closes with bytes unread resets the connection: ECONNRESET once, then EOF', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    await process.write(a, text('never read'));
    await process.close(b);
    expect(await errnoOf(process.read(a, 10))).toEqual(['ECONNRESET', 104]);
    expect((await process.read(a, 10)).length).toBe(0);
  });

  it('reads and writes of an unconnected socket fail: EINVAL and ENOTCONN', async () => {
    const process = (await bootedMachine()).spawn();
    const s = await process.socket(AF_UNIX, SOCK_STREAM);
    expect(await errnoOf(process.read(s, 1))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.write(s, text('x')))).toEqual(['ENOTCONN', 107]);
    expect(await errnoOf(process.sendmsg(s, text('x')))).toEqual(['ENOTCONN', 107]);
  });

  it('shutdown: SHUT_WR gives the peer EOF and this side EPIPE; SHUT_RD gives the peer EPIPE', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    await process.write(a, text('bye'));
    await process.shutdown(a, SHUT_WR);
    expect(await errnoOf(process.write(a, text('x')))).toEqual(['EPIPE', 32]);
    expect(str(await process.read(b, 10))).toBe('bye');
    expect((await process.read(b, 10)).length).toBe(0);
    // The other direction still works.
    await process.write(b, text('ok'));
    expect(str(await process.read(a, 10))).toBe('ok');
    const [c, d] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    await process.shutdown(c, SHUT_RD);
    expect(await errnoOf(process.write(d, text('x')))).toEqual(['EPIPE', 32]);
    expect(await errnoOf(process.shutdown(c, 3))).toEqual(['EINVAL', 22]);
  });

  it('a full buffer makes a non-blocking write short then EAGAIN, and a blocking one wait for the reader', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const big = new Uint8Array(BUFFER + 1000).fill(7);
    expect(await process.sendmsg(a, big, { flags: MSG_DONTWAIT })).toBe(BUFFER);
    expect(await errnoOf(process.sendmsg(a, text('x'), { flags: MSG_DONTWAIT }))).toEqual([
      'EAGAIN',
      11,
    ]);
    const write = process.write(a, new Uint8Array(5000).fill(9));
    expect(await pending(process, write)).toBe(true);
    let drained = 0;
    while (drained < BUFFER) {
      const chunk = await process.read(b, Math.min(65536, BUFFER - drained));
      expect(chunk.every((byte) => byte === 7)).toBe(true);
      drained += chunk.length;
    }
    expect(await write).toBe(5000);
    const rest = await process.read(b, 10_000);
    expect(rest.length).toBe(5000);
    expect(rest.every((byte) => byte === 9)).toBe(true);
  });

  it('a blocked accept or read ends with EINTR when its process exits', async () => {
    const process = (await bootedMachine()).spawn();
    const listener = await process.socket(AF_UNIX, SOCK_STREAM);
    await process.bind(listener, '/l');
    await process.listen(listener, 1);
    const [a] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const accept = process.accept(listener);
    const read = errnoOf(process.read(a, 1));
    expect(await pending(process, accept)).toBe(true);
    await process.exit();
    expect(await errnoOf(accept)).toEqual(['EINTR', 4]);
    expect(await read).toEqual(['EINTR', 4]);
  });

  it("a process's exit closes its sockets: the peer sees EOF, then EPIPE", async () => {
    const machine = await bootedMachine();
    const agent = machine.spawn();
    const service = machine.spawn();
    const { accepted, connected } = await connection(agent, service);
    const read = agent.read(accepted, 10);
    expect(await pending(agent, read)).toBe(true);
    await service.write(connected, text('x'));
    expect(str(await read)).toBe('x');
    const eof = agent.read(accepted, 10);
    await service.exit();
    expect((await eof).length).toBe(0);
    expect(await errnoOf(agent.write(accepted, text('y')))).toEqual(['EPIPE', 32]);
  });
});

describe('SCM_RIGHTS', () => {
  it('passes an open file to another process as a new fd sharing the open file description', async () => {
    const machine = await bootedMachine();
    const service = machine.spawn();
    const agent = machine.spawn();
    const { accepted, connected } = await connection(agent, service);
    const file = await service.open('/dev/ramfile');
    await service.write(file, text('kept across'));
    await agent.open('/dev/null'); // so the agent's next fd differs from the sender's
    expect(await service.sendmsg(connected, text('cache'), { rights: [file] })).toBe(5);
    const message = await agent.recvmsg(accepted, 64);
    expect(str(message.data)).toBe('cache');
    expect(message.flags).toBe(0);
    expect(message.rights).toHaveLength(1);
    const [got] = message.rights as [number];
    expect(got).not.toBe(file);
    expect(await agent.fcntl(got, F_GETFD)).toBe(0);
    // One open file description: the position moves for both.
    expect(await agent.lseek(got, 0, SEEK_CUR)).toBe(11);
    await agent.lseek(got, 5, SEEK_SET);
    expect(await service.lseek(file, 0, SEEK_CUR)).toBe(5);
    // The sender's copy goes; the receiver's still works, and the file is released only with it.
    await service.close(file);
    expect(str(await agent.pread(got, 11, 0))).toBe('kept across');
    expect(await released(agent)).toBe(0);
    await agent.close(got);
    expect(await released(agent)).toBe(1);
  });

  it('MSG_CMSG_CLOEXEC marks the received fds close-on-exec', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const file = await process.open('/dev/null');
    await process.sendmsg(a, text('x'), { rights: [file, file] });
    const { rights } = await process.recvmsg(b, 1, { flags: MSG_CMSG_CLOEXEC });
    expect(rights).toHaveLength(2);
    for (const fd of rights) expect(await process.fcntl(fd, F_GETFD)).toBe(FD_CLOEXEC);
  });

  it('refuses a bad fd (EBADF), more than SCM_MAX_FD fds (EINVAL) and a unix socket (EOPNOTSUPP)', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const file = await process.open('/dev/null');
    expect(await errnoOf(process.sendmsg(a, text('x'), { rights: [file, 99] }))).toEqual([
      'EBADF',
      9,
    ]);
    const many = new Array<number>(SCM_MAX_FD + 1).fill(file);
    expect(await errnoOf(process.sendmsg(a, text('x'), { rights: many }))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(process.sendmsg(a, text('x'), { rights: [b] }))).toEqual([
      'EOPNOTSUPP',
      95,
    ]);
    // Nothing of the refused messages was sent.
    expect(await errnoOf(process.recvmsg(b, 10, { flags: MSG_DONTWAIT }))).toEqual(['EAGAIN', 11]);
    // SCM_MAX_FD fds is the most one message carries.
    await process.sendmsg(a, text('x'), { rights: many.slice(1) });
    const { rights, flags } = await process.recvmsg(b, 10);
    expect([rights.length, flags]).toEqual([SCM_MAX_FD, 0]);
  });

  it('MSG_CTRUNC when the receiver has room for fewer fds: those that do not fit are closed', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const files = [
      await process.open('/dev/ramfile'),
      await process.open('/dev/ramfile'),
      await process.open('/dev/ramfile'),
    ];
    await process.sendmsg(a, text('three'), { rights: files });
    for (const fd of files) await process.close(fd);
    expect(await released(process)).toBe(0);
    const message = await process.recvmsg(b, 64, { maxRights: 1 });
    expect(str(message.data)).toBe('three');
    expect(message.flags).toBe(MSG_CTRUNC);
    expect(message.rights).toHaveLength(1);
    expect(await released(process)).toBe(2);
    await process.close(message.rights[0]!);
    expect(await released(process)).toBe(3);
  });

  it('MSG_CTRUNC too when the fd table is full: the fds that do not fit are closed', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const file = await process.open('/dev/ramfile');
    await process.sendmsg(a, text('x'), { rights: [file, file] });
    await process.close(file);
    const filler = await process.open('/dev/null');
    for (;;) {
      const result = await errnoOf(process.dup(filler));
      if (result === 'resolved') continue;
      expect(result).toEqual(['EMFILE', 24]);
      break;
    }
    await process.close(filler); // room for one fd
    const message = await process.recvmsg(b, 1);
    expect([message.rights.length, message.flags]).toEqual([1, MSG_CTRUNC]);
    expect(await released(process)).toBe(0);
    await process.close(message.rights[0]!);
    expect(await released(process)).toBe(1);
  });

  it('read(2) has no room for fds: it gets the bytes and the fds are closed', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const file = await process.open('/dev/ramfile');
    await process.sendmsg(a, text('data'), { rights: [file] });
    await process.close(file);
    expect(str(await process.read(b, 64))).toBe('data');
    expect(await released(process)).toBe(1);
  });

  it('fds come with the first byte of their message, and a receive never joins bytes across that message', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const file = await process.open('/dev/null');
    await process.write(a, text('ab'));
    await process.sendmsg(a, text('cd'), { rights: [file] });
    await process.write(a, text('ef'));
    const first = await process.recvmsg(b, 100);
    expect([str(first.data), first.rights.length]).toEqual(['ab', 0]);
    const second = await process.recvmsg(b, 1);
    expect([str(second.data), second.rights.length]).toEqual(['c', 1]);
    // The fds left with "c"; what remains of that write is plain bytes, as in Linux.
    const third = await process.recvmsg(b, 100);
    expect([str(third.data), third.rights.length]).toEqual(['def', 0]);
  });

  it('an empty sendmsg sends no fds, as a stream carries files only with bytes', async () => {
    const process = (await bootedMachine()).spawn();
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const file = await process.open('/dev/ramfile');
    expect(await process.sendmsg(a, new Uint8Array(0), { rights: [file] })).toBe(0);
    await process.close(file);
    expect(await released(process)).toBe(1);
    expect(await errnoOf(process.recvmsg(b, 10, { flags: MSG_DONTWAIT }))).toEqual(['EAGAIN', 11]);
  });

  it('files in flight are held, and released with the socket that never received them: frames come back', async () => {
    const process = (await bootedMachine()).spawn();
    const stats = async (): Promise<number> =>
      (await probe<PageStats>(process, 'stats')).pages.free;
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    const before = await stats();
    const file = await process.open('/dev/ramfile'); // four frames
    await process.sendmsg(a, text('in flight'), { rights: [file] });
    await process.close(file);
    expect(await released(process)).toBe(0);
    expect(await stats()).toBe(before - 4);
    await process.close(b);
    expect(await released(process)).toBe(1);
    expect(await stats()).toBe(before);
    await process.close(a);
  });

  it('files in flight to a receiver that exits, or to a connection never accepted, are released', async () => {
    const machine = await bootedMachine();
    const service = machine.spawn();
    const agent = machine.spawn();
    const { connected } = await connection(agent, service, '/one');
    const file = await service.open('/dev/ramfile');
    await service.sendmsg(connected, text('for the agent'), { rights: [file] });
    await service.close(file);
    // A second connection, never accepted, with a file in flight.
    const pendingClient = await service.socket(AF_UNIX, SOCK_STREAM);
    await service.connect(pendingClient, '/one');
    const other = await service.open('/dev/ramfile');
    await service.sendmsg(pendingClient, text('never accepted'), { rights: [other] });
    await service.close(other);
    expect(await released(service)).toBe(0);
    await agent.exit();
    expect(await released(service)).toBe(2);
    // Both clients: the accepted peer closed with bytes unread, the other died in the backlog.
    expect(await errnoOf(service.read(connected, 1))).toEqual(['ECONNRESET', 104]);
    expect(await errnoOf(service.read(pendingClient, 1))).toEqual(['ECONNRESET', 104]);
  });
});

describe('unix sockets and kexec', () => {
  it('nothing survives a kexec: bound paths are gone and the old processes with their sockets', async () => {
    const machine = await bootedMachine();
    const agent = machine.spawn();
    const service = machine.spawn();
    const { connected } = await connection(agent, service, '/run/luod.sock');
    const read = errnoOf(service.read(connected, 1));
    const next = await kexec(machine, agent, testImage('6.18.1'));
    expect(await read).toEqual(['ESRCH', 3]);
    const client = await next.socket(AF_UNIX, SOCK_STREAM);
    expect(await errnoOf(next.connect(client, '/run/luod.sock'))).toEqual(['ENOENT', 2]);
    // The path is free to bind again in the new kernel.
    const listener = await next.socket(AF_UNIX, SOCK_STREAM);
    await next.bind(listener, '/run/luod.sock');
  });
});
