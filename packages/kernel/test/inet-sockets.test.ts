import { connect, createServer, type Server, type Socket } from 'node:net';
import { until } from '@liveupdate/vitest-config/wait-until';
import { describe, expect, it } from 'vitest';
import {
  AF_INET,
  AF_UNIX,
  INADDR_ANY,
  INADDR_LOOPBACK,
  IPPROTO_TCP,
  SHUT_WR,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  type Process,
  type SockaddrIn,
} from '@liveupdate/machine';
import { bootedMachine, errnoOf, kexec, testImage } from './helpers.js';

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
const loopback = (port: number): SockaddrIn => ({
  family: AF_INET,
  address: INADDR_LOOPBACK,
  port,
});

/** Generous: the machine may be loaded. */
const BOUND_MS = 10_000;

/** Resolve when `emitter` emits `event`, or fail saying what was awaited. */
function once<T = unknown>(emitter: NodeJS.EventEmitter, event: string, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), BOUND_MS);
    emitter.once(event, (value: T) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/**
 * A host client connected to 127.0.0.1:`port`, with everything it receives collected; with
 * `allowHalfOpen` it keeps writing after our FIN (node's default answers a FIN with its own).
 */
async function hostClient(
  port: number,
  allowHalfOpen = false,
): Promise<{ socket: Socket; received: () => string }> {
  const socket = connect({ host: INADDR_LOOPBACK, port, allowHalfOpen });
  socket.on('error', () => {});
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
  await once(socket, 'connect', `a connection to port ${port}`);
  return { socket, received: () => received };
}

/** A TCP listener of `process` on a free loopback port. */
async function listener(process: Process, flags = 0): Promise<{ fd: number; port: number }> {
  const fd = await process.socket(AF_INET, SOCK_STREAM | flags);
  await process.bind(fd, loopback(0));
  await process.listen(fd, 16);
  const name = (await process.getsockname(fd)) as SockaddrIn;
  return { fd, port: name.port };
}

/** Whether the host can listen on `port` itself (nothing holds it). */
async function hostCanBind(port: number): Promise<boolean> {
  const server: Server = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: INADDR_LOOPBACK, port, exclusive: true }, resolve);
    });
    return true;
  } catch {
    return false;
  } finally {
    server.close();
  }
}

describe('AF_INET stream sockets on loopback', () => {
  it('a host client connects to the bound port and bytes flow both ways until end of file', async () => {
    const process = (await bootedMachine()).spawn();
    const fd = await process.socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    expect(await process.getsockname(fd)).toEqual({
      family: AF_INET,
      address: INADDR_ANY,
      port: 0,
    });
    await process.bind(fd, loopback(0));
    await process.listen(fd, 4);
    const { port } = (await process.getsockname(fd)) as SockaddrIn;
    expect(port).toBeGreaterThan(0);
    const client = await hostClient(port);
    const accepted = await process.accept(fd);
    expect(await process.getsockname(accepted)).toEqual(loopback(port));
    client.socket.write('get key\r\n');
    expect(str(await process.read(accepted, 64))).toBe('get key\r\n');
    expect(await process.write(accepted, text('END\r\n'))).toBe(5);
    await until(() => client.received() === 'END\r\n', 'the reply at the host client');
    client.socket.end();
    expect((await process.recvmsg(accepted, 64)).data.length).toBe(0);
    // Half-closed by the peer: this side may still write, then closes.
    await process.write(accepted, text('bye'));
    const closed = once(client.socket, 'close', 'the host client to see the close');
    await process.close(accepted);
    await closed;
    expect(client.received()).toBe('END\r\nbye');
  });

  it('bind refuses other addresses, families, ports and a second bind with the errnos of inet_bind', async () => {
    const process = (await bootedMachine()).spawn();
    const fd = await process.socket(AF_INET, SOCK_STREAM);
    const bind = (address: unknown) => process.syscall('bind', fd, address);
    expect(await errnoOf(bind({ family: AF_INET, address: '10.0.0.1', port: 0 }))).toEqual([
      'EADDRNOTAVAIL',
      99,
    ]);
    expect(await errnoOf(bind({ family: AF_INET, address: INADDR_ANY, port: 0 }))).toEqual([
      'EADDRNOTAVAIL',
      99,
    ]);
    expect(await errnoOf(bind({ family: AF_UNIX, address: INADDR_LOOPBACK, port: 0 }))).toEqual([
      'EAFNOSUPPORT',
      97,
    ]);
    expect(await errnoOf(bind('/run/cache.sock'))).toEqual(['EINVAL', 22]);
    expect(await errnoOf(bind(loopback(65_536)))).toEqual(['EINVAL', 22]);
    await process.bind(fd, loopback(0));
    expect(await errnoOf(process.bind(fd, loopback(0)))).toEqual(['EINVAL', 22]);
    // A port somebody holds: another socket of the machine, or the host itself.
    const { port } = (await process.getsockname(fd)) as SockaddrIn;
    const other = await process.socket(AF_INET, SOCK_STREAM);
    expect(await errnoOf(process.bind(other, loopback(port)))).toEqual(['EADDRINUSE', 98]);
    expect(await hostCanBind(port)).toBe(false);
  });

  it('socket, socketpair, connect and sendmsg refuse what TCP on this machine does not do', async () => {
    const process = (await bootedMachine()).spawn();
    expect(await errnoOf(process.socket(AF_INET, SOCK_DGRAM))).toEqual(['EPROTONOSUPPORT', 93]);
    expect(await errnoOf(process.socket(AF_INET, SOCK_STREAM, 17))).toEqual([
      'EPROTONOSUPPORT',
      93,
    ]);
    expect(await errnoOf(process.socketpair(AF_INET, SOCK_STREAM))).toEqual(['EOPNOTSUPP', 95]);
    const fd = await process.socket(AF_INET, SOCK_STREAM);
    expect(await errnoOf(process.connect(fd, '/run/x'))).toEqual(['EOPNOTSUPP', 95]);
    // Not connected: reads ENOTCONN, writes EPIPE (tcp_recvmsg, sk_stream_wait_connect).
    expect(await errnoOf(process.read(fd, 1))).toEqual(['ENOTCONN', 107]);
    expect(await errnoOf(process.write(fd, text('x')))).toEqual(['EPIPE', 32]);
    expect(await errnoOf(process.shutdown(fd, SHUT_WR))).toEqual(['ENOTCONN', 107]);
    expect(await errnoOf(process.accept(fd))).toEqual(['EINVAL', 22]);
    const { fd: tcp, port } = await listener(process);
    const client = await hostClient(port);
    const accepted = await process.accept(tcp);
    const memfd = await process.open('/dev/null');
    expect(await errnoOf(process.sendmsg(accepted, text('x'), { rights: [memfd] }))).toEqual([
      'EOPNOTSUPP',
      95,
    ]);
    client.socket.destroy();
  });

  it('an accepted TCP socket travels over a unix socket (SCM_RIGHTS) and keeps its connection', async () => {
    const process = (await bootedMachine()).spawn();
    const { fd, port } = await listener(process);
    const client = await hostClient(port);
    const accepted = await process.accept(fd);
    const [a, b] = await process.socketpair(AF_UNIX, SOCK_STREAM);
    await process.sendmsg(a, text('conn'), { rights: [accepted] });
    await process.close(accepted);
    const { rights } = await process.recvmsg(b, 16);
    expect(rights).toHaveLength(1);
    client.socket.write('via the passed fd');
    expect(str(await process.read(rights[0]!, 64))).toBe('via the passed fd');
    client.socket.destroy();
  });

  it('listen on an unbound socket binds a free port; accept waits, or EAGAIN when non-blocking', async () => {
    const process = (await bootedMachine()).spawn();
    const fd = await process.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK);
    await process.listen(fd, 1);
    const { port } = (await process.getsockname(fd)) as SockaddrIn;
    expect(port).toBeGreaterThan(0);
    expect(await errnoOf(process.accept(fd))).toEqual(['EAGAIN', 11]);
    const blocking = await process.socket(AF_INET, SOCK_STREAM);
    await process.listen(blocking, 1);
    const blockingPort = ((await process.getsockname(blocking)) as SockaddrIn).port;
    const accepting = process.accept(blocking);
    const client = await hostClient(blockingPort);
    const accepted = await accepting;
    client.socket.write('hi');
    expect(str(await process.read(accepted, 2))).toBe('hi');
    // SOCK_NONBLOCK from accept4: an empty queue is EAGAIN, not a wait.
    const other = await hostClient(blockingPort);
    const nonblocking = await process.accept(blocking, SOCK_NONBLOCK);
    expect(await errnoOf(process.read(nonblocking, 1))).toEqual(['EAGAIN', 11]);
    other.socket.destroy();
    client.socket.destroy();
  });

  it('a peer reset gives ECONNRESET once, then writes fail with EPIPE; SHUT_WR sends end of file', async () => {
    const process = (await bootedMachine()).spawn();
    const { fd, port } = await listener(process);
    const first = await hostClient(port);
    const reset = await process.accept(fd);
    first.socket.resetAndDestroy();
    expect(await errnoOf(process.read(reset, 16))).toEqual(['ECONNRESET', 104]);
    expect(await errnoOf(process.write(reset, text('late')))).toEqual(['EPIPE', 32]);

    const second = await hostClient(port, true);
    const accepted = await process.accept(fd);
    const ended = once(second.socket, 'end', 'end of file at the host client');
    await process.write(accepted, text('last words'));
    await process.shutdown(accepted, SHUT_WR);
    await ended;
    expect(second.received()).toBe('last words');
    expect(await errnoOf(process.write(accepted, text('more')))).toEqual(['EPIPE', 32]);
    // Reading still works after our SHUT_WR.
    second.socket.write('reply');
    expect(str(await process.read(accepted, 16))).toBe('reply');
    second.socket.destroy();
  });

  it('a connection left in the backlog or the listener itself die with the process, and the port is free', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const { port } = await listener(process);
    const waiting = await hostClient(port);
    const closed = once(waiting.socket, 'close', 'the unaccepted connection to close');
    await process.exit();
    await closed;
    // The worker closes the server's handle asynchronously: poll, with a bound.
    await until(() => hostCanBind(port), `port ${port} to be free`);
  });
});

describe('AF_INET sockets and kexec', () => {
  it('the listener dies with its kernel; the next kernel binds the same port and serves a new client', async () => {
    const machine = await bootedMachine();
    const process = machine.spawn();
    const { fd, port } = await listener(process);
    const old = await hostClient(port);
    await process.accept(fd);
    const closed = once(old.socket, 'close', 'the old kernel connection to close at kexec');
    const next = await kexec(machine, process, testImage('6.18.1'));
    await closed;
    const again = await next.socket(AF_INET, SOCK_STREAM);
    await next.bind(again, loopback(port));
    await next.listen(again, 4);
    const client = await hostClient(port);
    const accepted = await next.accept(again);
    client.socket.write('after kexec');
    expect(str(await next.read(accepted, 32))).toBe('after kexec');
    client.socket.destroy();
  });
});
