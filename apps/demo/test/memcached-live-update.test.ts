// The demo's cache serves memcached from its memfd through a live update driven by the host's
// agent: a real client (npm memcache-client) loads keys before, runs set/get across the update,
// and reads every key back after. No wrong value, no lost acknowledged write.
import { LuoAgent } from '@liveupdate/agent';
import { Machine } from '@liveupdate/machine';
import { until } from '@liveupdate/vitest-config/wait-until';
import { afterEach, expect, it } from 'vitest';
import { CacheProcess, memcachedTableOffset } from '../src/cache-process.js';
import { hostKernelImage } from '../src/host-kernel-image.js';
import { planKvCache } from '../src/kv-cache.js';
import { liveUpdateHost } from '../src/live-update-host.js';
import { memcachedFigures } from '../src/memcached-accounting.js';
import { MemcachedClients } from '../src/memcached-clients.js';

const MiB = 1024 ** 2;
/** Generous: the machine may be loaded. */
const BOUND_MS = 20_000;
const machines: Machine[] = [];
const clients: MemcachedClients[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(machines.splice(0).map((machine) => machine.shutdown()));
});

it('serves memcache-client through a live update: 0 wrong values, 0 lost writes', async () => {
  const machine = Machine.create({ ramBytes: 512 * MiB });
  machines.push(machine);
  await machine.boot(hostKernelImage('6.18.0'));
  const agent = await LuoAgent.start(machine.spawn());
  const layout = planKvCache(4 * MiB, 1000);
  const { cacheProcess } = await CacheProcess.create(machine, layout, {
    memcached: { slots: 256 },
  });
  const port = cacheProcess.memcached!.server.port;
  expect(cacheProcess.memcached!.table.layout.offset).toBe(memcachedTableOffset(layout));
  expect(cacheProcess.memcached!.table.layout.offset).toBeLessThanOrEqual(layout.fileBytes);

  const c = MemcachedClients.connect(port, { keys: 60, connections: 3, timeoutMs: BOUND_MS });
  clients.push(c);
  await c.load();
  c.startLoop();
  await until(() => c.successesSince(0) >= 20, 'the clients to be served before the update');

  const update = await liveUpdateHost(
    machine,
    { agent, cache: cacheProcess },
    hostKernelImage('6.18.1'),
  );
  const after = performance.now();
  const next = update.cache!.cacheProcess;
  expect(next.process.pid).not.toBe(cacheProcess.process.pid);
  expect(next.memcached!.server.port).toBe(port);
  await until(
    () => c.successesSince(after) >= 20,
    'the clients to be served again after the update',
    BOUND_MS,
  );
  await c.stopLoop();
  await c.readBack();

  const figures = memcachedFigures(c.records);
  expect(figures.wrongValues).toBe(0);
  expect(figures.lostWrites).toBe(0);
  expect(figures.requests).toBeGreaterThan(60 + 40 + 60);
  // The server was gone for a while: the loop saw a gap at least as long as no server listened.
  expect(figures.outageMs).toBeGreaterThan(0);
  const readBack = c.records.filter((r) => r.phase === 'readBack');
  expect(readBack).toHaveLength(60);
  expect(readBack.every((r) => r.ok && r.value !== null)).toBe(true);
});

it('counts a value changed behind the clients’ back as a wrong value or a lost write', async () => {
  const machine = Machine.create({ ramBytes: 256 * MiB });
  machines.push(machine);
  await machine.boot(hostKernelImage('6.18.0'));
  const layout = planKvCache(1 * MiB, 100);
  const { cacheProcess } = await CacheProcess.create(machine, layout, {
    memcached: { slots: 16 },
  });
  const c = MemcachedClients.connect(cacheProcess.memcached!.server.port, {
    keys: 4,
    connections: 1,
    timeoutMs: BOUND_MS,
  });
  clients.push(c);
  await c.load();
  // Another writer (not the recorded clients) changes key-2 in the table itself.
  expect(
    cacheProcess.memcached!.table.store(
      'set',
      'key-2',
      0,
      0,
      new TextEncoder().encode('tampered'),
      0,
    ),
  ).toBe('STORED');
  await c.readBack();
  expect(memcachedFigures(c.records)).toMatchObject({ lostWrites: 1, wrongValues: 0 });
});
