import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LiveUpdateDevice } from '@liveupdate/core';
import { LINUX_REBOOT_CMD_KEXEC, Machine, PAGE_SIZE, type Process } from '@liveupdate/machine';
import { MappedMemfd } from '@liveupdate/plugin-memfd';
import { MemcacheClient } from 'memcache-client';
import { within } from '@liveupdate/vitest-config/wait-until';
import { afterEach, describe, expect, it } from 'vitest';
import { cacheKernelImage } from '../src/cache-kernel-image.js';
import { MemcachedServer } from '../src/memcached-server.js';
import { MEMCACHED_SLOT_BYTES, MemcachedTable } from '../src/memcached-table.js';
import { runTool, type ToolRun } from '../src/memcached-tools.js';

const SLOTS = 64;
const TABLE_BYTES = PAGE_SIZE + SLOTS * MEMCACHED_SLOT_BYTES;
const SESSION = 'memcached';
const TOKEN = 1;
/** Generous: the machine may be loaded. */
const BOUND_MS = 20_000;

const machines: Machine[] = [];
const clients: MemcacheClient[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.shutdown();
  await Promise.all(machines.splice(0).map((machine) => machine.shutdown()));
});

async function bootedMachine(): Promise<Machine> {
  const machine = Machine.create({ ramBytes: 64 * 1024 * 1024 });
  machines.push(machine);
  await machine.boot(cacheKernelImage('6.18.0'));
  return machine;
}

/** A cache process with a memfd table and a server on a free port. */
async function cacheServer(
  machine: Machine,
  port = 0,
): Promise<{ process: Process; memfd: number; server: MemcachedServer; table: MemcachedTable }> {
  const process = machine.spawn();
  const { fd: memfd, mapping } = await MappedMemfd.create(process, SESSION, TABLE_BYTES);
  const table = MemcachedTable.format(mapping, {
    offset: 0,
    bytes: TABLE_BYTES,
    slotBytes: MEMCACHED_SLOT_BYTES,
  });
  const server = await MemcachedServer.listen(process, table, { port });
  return { process, memfd, server, table };
}

function client(port: number): MemcacheClient {
  const c = new MemcacheClient({ server: `127.0.0.1:${port}`, cmdTimeout: BOUND_MS });
  clients.push(c);
  return c;
}

/** Retry `attempt` until it resolves, or fail saying what was awaited. */
async function eventually<T>(attempt: () => Promise<T>, what: string): Promise<T> {
  const deadline = Date.now() + BOUND_MS;
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${what}`, { cause: error });
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

describe('the memcached server, with a real memcached client (memcache-client)', () => {
  it('set, get, gets, add, replace, delete, incr, decr, touch and version round-trip', async () => {
    const { server } = await cacheServer(await bootedMachine());
    const c = client(server.port);
    expect(await c.set('greeting', 'hello')).toEqual(['STORED']);
    expect((await c.get<string>('greeting')).value).toBe('hello');
    // The client turns NOT_STORED into an error unless told to ignore it.
    await expect(c.add('greeting', 'again')).rejects.toThrow(/NOT_STORED/);
    expect(await c.add('greeting', 'again', { ignoreNotStored: true })).toBe('ignore NOT_STORED');
    expect(await c.replace('greeting', 'hi')).toEqual(['STORED']);
    expect((await c.get<string>('greeting')).value).toBe('hi');
    const json = { a: 1, b: ['x'] };
    await c.set('json', json);
    expect((await c.get('json')).value).toEqual(json);

    const multi = await c.get<Record<string, { value: unknown }>>(['greeting', 'json', 'absent']);
    expect(Object.keys(multi).sort()).toEqual(['greeting', 'json']);
    const gets = await c.gets<string>('greeting');
    expect(String(gets.casUniq)).toMatch(/^\d+$/);
    expect(await c.cas('greeting', 'swapped', { casUniq: gets.casUniq })).toEqual(['STORED']);
    expect((await c.get<string>('greeting')).value).toBe('swapped');

    await c.set('counter', '41');
    expect(await c.incr('counter', 1)).toBe('42');
    expect(await c.decr('counter', 50)).toBe('0');

    expect(await c.touch('counter', 1000)).toEqual(['TOUCHED']);
    // The client turns NOT_FOUND and EXISTS into errors too.
    await expect(c.touch('absent', 1000)).rejects.toThrow(/^NOT_FOUND$/);
    expect(await c.delete('counter')).toEqual(['DELETED']);
    await expect(c.delete('counter')).rejects.toThrow(/^NOT_FOUND$/);
    await expect(c.incr('counter', 1)).rejects.toThrow(/^NOT_FOUND$/);
    await expect(c.cas('greeting', 'late', { casUniq: gets.casUniq })).rejects.toThrow(/^EXISTS$/);
    expect(await c.get('counter')).toBeUndefined();
    expect((await c.version())[0]).toBe('VERSION');
  });

  it('stores and returns a value of the documented maximum size; one byte more is refused', async () => {
    const { server, table } = await cacheServer(await bootedMachine());
    expect(table.maxValueBytes).toBe(MEMCACHED_SLOT_BYTES - 280);
    const c = client(server.port);
    const max = Buffer.from(
      Uint8Array.from({ length: table.maxValueBytes }, (_, i) => (i * 31 + 7) & 0xff),
    );
    expect(await c.set('max', max)).toEqual(['STORED']);
    expect((await c.get<Buffer>('max')).value.equals(max)).toBe(true);
    await expect(c.set('over', Buffer.alloc(table.maxValueBytes + 1))).rejects.toThrow(
      /object too large/,
    );
    // The connection is still usable.
    expect((await c.get<Buffer>('max')).value.length).toBe(table.maxValueBytes);
  });

  it('serves several clients at once, each on its own connection', async () => {
    const { server } = await cacheServer(await bootedMachine());
    const many = Array.from({ length: 4 }, () => client(server.port));
    await Promise.all(
      many.map(async (c, i) => {
        for (let n = 0; n < 10; n++) await c.set(`c${i}-${n}`, `${i}:${n}`);
      }),
    );
    const values = await Promise.all(
      many.map((c, i) => c.get<string>(`c${(i + 1) % 4}-9`).then((r) => r.value)),
    );
    expect(values).toEqual(['1:9', '2:9', '3:9', '0:9']);
    expect(server.stats.totalConnections).toBe(4);
  });

  it('answers bad input on a raw connection and keeps it usable; quit and close() end connections', async () => {
    const { server } = await cacheServer(await bootedMachine());
    const raw = connect({ host: '127.0.0.1', port: server.port });
    raw.on('error', () => {});
    let received = '';
    raw.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    // Split mid-line and mid-value, as TCP may deliver it (the pause only makes a split likely).
    raw.write('bogus\r\nset k 0 0 1\r\nab\r\nset k 3 0 5\r\nhel');
    await new Promise((resolve) => setTimeout(resolve, 20));
    raw.write('lo\r\nget k\r\nquit\r\nget k\r\n');
    await within(closed, 'the server to close the connection after quit');
    expect(received).toBe(
      'ERROR\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\nSTORED\r\nVALUE k 3 5\r\nhello\r\nEND\r\n',
    );
    // close() ends an idle client's connection and the listener.
    const idle = connect({ host: '127.0.0.1', port: server.port });
    idle.on('error', () => {});
    await within(
      new Promise<void>((resolve) => idle.once('connect', () => resolve())),
      'the idle client to connect',
    );
    await eventually(async () => {
      if (server.stats.currConnections !== 1) throw new Error('not accepted yet');
    }, 'the server to accept the idle client');
    const idleClosed = new Promise<void>((resolve) => idle.once('close', () => resolve()));
    await within(server.close(), 'the server to close');
    await within(idleClosed, 'the idle client to see its connection closed');
    expect(server.stats.currConnections).toBe(0);
  });

  it('keeps the items through a live update: the next cache process serves them on the same port', async () => {
    const machine = await bootedMachine();
    const old = await cacheServer(machine);
    const port = old.server.port;
    const c = client(port);
    const big = Buffer.alloc(40_000, 0x5a);
    await c.set('kept', 'before the update');
    await c.set('big', big);
    await c.set('n', '7');

    const server = await liveUpdate(machine, old);
    expect(server.port).toBe(port);

    const kept = await eventually(() => c.get<string>('kept'), 'the client to reconnect');
    expect(kept.value).toBe('before the update');
    expect((await c.get<Buffer>('big')).value.equals(big)).toBe(true);
    expect(await c.incr('n', 1)).toBe('8');
  });
});

/**
 * Live-update `machine` under the cache `old`: it preserves its memfd in its session and keeps the
 * session fd open; the next kernel's cache process retrieves the memfd, attaches to the table and
 * listens again on the same port.
 */
async function liveUpdate(
  machine: Machine,
  old: Awaited<ReturnType<typeof cacheServer>>,
): Promise<MemcachedServer> {
  const device = await LiveUpdateDevice.open(old.process);
  const session = await device.createSession(SESSION);
  await device.close();
  await session.preserveFd(old.memfd, TOKEN);
  const updater = machine.spawn();
  await updater.kexecLoad(cacheKernelImage('6.18.1'));
  await updater.reboot(LINUX_REBOOT_CMD_KEXEC);

  const next = machine.spawn();
  const nextDevice = await LiveUpdateDevice.open(next);
  const incoming = await nextDevice.retrieveSession(SESSION);
  const memfd = await incoming.retrieveFd(TOKEN);
  await incoming.finish();
  await incoming.close();
  await nextDevice.close();
  const { mapping } = await MappedMemfd.map(next, memfd);
  return MemcachedServer.listen(next, MemcachedTable.attach(mapping, 0), { port: old.server.port });
}

/** Debian's libmemcached-tools (`.ci/run` installs them): clients written by others, in C. */
const TOOLS = ['memccapable', 'memccp', 'memccat'].map((name) => `/usr/bin/${name}`);
const missingTools = TOOLS.filter((path) => !existsSync(path));
const inCi = process.env.CI === 'true';
if (missingTools.length > 0 && !inCi) {
  console.warn(
    `skipping the libmemcached-tools tests: ${missingTools.join(', ')} not found ` +
      '(Debian: apt-get install libmemcached-tools); under CI=true they fail instead',
  );
}

/** Run a tool to its end (a bounded wait), with its exit code and output, never throwing. */
async function tool(path: string, args: readonly string[]): Promise<ToolRun> {
  if (!existsSync(path)) throw new Error(`${path} not found (Debian: libmemcached-tools)`);
  return within(runTool(path, args, BOUND_MS), `${path} ${args.join(' ')}`);
}

describe.skipIf(missingTools.length > 0 && !inCi)(
  "the memcached server, with Debian's libmemcached-tools",
  () => {
    it('passes memccapable, the ascii protocol conformance test of libmemcached', async () => {
      const { server } = await cacheServer(await bootedMachine());
      const run = await tool(TOOLS[0]!, ['-a', '-h', '127.0.0.1', '-p', String(server.port)]);
      const report = `${run.stdout.toString('utf8')}${run.stderr}`;
      expect(report).not.toMatch(/\[FAIL\]/);
      expect(report).toMatch(/\[pass\]/);
      expect({ code: run.code, report }).toMatchObject({ code: 0 });
    });

    it('memccp stores a file, memccat reads it back the same after a live update', async () => {
      const machine = await bootedMachine();
      const old = await cacheServer(machine);
      const servers = `--servers=127.0.0.1:${old.server.port}`;
      const dir = await mkdtemp(join(tmpdir(), 'memcached-tools-'));
      try {
        const file = join(dir, 'table.bin');
        const bytes = Buffer.from(
          Uint8Array.from({ length: 30_000 }, (_, i) => (i * 131 + 17) & 0xff),
        );
        await writeFile(file, bytes);
        const copied = await tool(TOOLS[1]!, [servers, file]);
        expect({ code: copied.code, stderr: copied.stderr }).toEqual({ code: 0, stderr: '' });
        // memccat prints each value followed by a newline.
        const printed = Buffer.concat([bytes, Buffer.from('\n')]);
        expect((await tool(TOOLS[2]!, [servers, 'table.bin'])).stdout.equals(printed)).toBe(true);

        await liveUpdate(machine, old);

        const read = await eventually(async () => {
          const run = await tool(TOOLS[2]!, [servers, 'table.bin']);
          if (run.code !== 0) throw new Error(`memccat exited ${run.code}: ${run.stderr}`);
          return run.stdout;
        }, 'memccat to read the key after the live update');
        expect(read.equals(printed)).toBe(true);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  },
);
