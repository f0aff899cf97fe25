// memcached benchmark, run by `pnpm bench` on the built dist (a script, not a test). The demo's
// cache serves memcached from its memfd while the same host-side clients as `pnpm demo
// --memcached` (npm memcache-client: keys loaded, a set/get loop on several connections, every
// key read back) drive it through a restart of the kernel, two ways:
//   luo:  a live update through the host's agent; the new cache process fetches the memfd and
//         listens again on the same port;
//   disk: the baseline without LUO: the service stops serving, writes its memfd to a file
//         (node:fs, fsync), the kernel kexecs with no session, and a new process reads the file
//         back into a new memfd and listens again on the same port.
// Printed: the clients' outage, requests served and client errors, medians of RUNS runs with
// their min and max, LUO beside the baseline; then one JSON line per figure. Fails if any run
// returned a wrong value or lost an acknowledged write.
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { LuoAgent } from '@liveupdate/agent';
import { LINUX_REBOOT_CMD_KEXEC, Machine, SEEK_END } from '@liveupdate/machine';
import { cacheKernelImage } from '../dist/cache-kernel-image.js';
import { CacheProcess, memcachedTableOffset } from '../dist/cache-process.js';
import { planKvCache } from '../dist/kv-cache.js';
import { liveUpdateHost } from '../dist/live-update-host.js';
import { memcachedFigures } from '../dist/memcached-accounting.js';
import { MemcachedClients, successesAfter } from '../dist/memcached-clients.js';
import { MemcachedServer } from '../dist/memcached-server.js';
import { MemcachedTable } from '../dist/memcached-table.js';
import {
  figureTable,
  printFigureLines,
  textTable,
} from '../../../tooling/scripts/bench-report.mjs';
import { median, readMappingFile, writeMappingFile } from './bench-common.mjs';

const MiB = 1024 ** 2;
const RAM_BYTES = 1024 ** 3;
/** Runs of each way; `MEMCACHED_BENCH_RUNS=2` for a quick look that it works. */
const RUNS = Number(process.env.MEMCACHED_BENCH_RUNS ?? 7);
const CACHE_BYTES = 16 * MiB;
const CACHE_KEYS = 20_000;
const SLOTS = 1024;
const KEYS = 500;
const CONNECTIONS = 4;
/** Loop requests served before the restart and after it, before the loop stops. */
const SUCCESSES = 50;
/** Bound of a request and of the wait for the clients to be served again. */
const BOUND_MS = 30_000;

let nextVersion = 0;
const nextImage = () => cacheKernelImage(`6.18.${nextVersion++}`);

/**
 * One run: a machine, a cache serving memcached, the clients loaded and looping; `restart` takes
 * the kernel from under them; then the loop is served again, stopped, every key read back.
 */
async function benchRun(way, directory) {
  const machine = Machine.create({ ramBytes: RAM_BYTES });
  let clients;
  try {
    await machine.boot(nextImage());
    const agent = way === 'luo' ? await LuoAgent.start(machine.spawn()) : undefined;
    const layout = planKvCache(CACHE_BYTES, CACHE_KEYS);
    const { cacheProcess } = await CacheProcess.create(machine, layout, {
      memcached: { slots: SLOTS },
    });
    const port = cacheProcess.memcached.server.port;
    clients = MemcachedClients.connect(port, {
      keys: KEYS,
      connections: CONNECTIONS,
      timeoutMs: BOUND_MS,
    });
    await clients.load();
    clients.startLoop();
    await successesAfter(clients, 0, SUCCESSES, BOUND_MS);
    if (way === 'luo') {
      await liveUpdateHost(machine, { agent, cache: cacheProcess }, nextImage());
    } else {
      await diskRestart(machine, cacheProcess, layout, join(directory, 'memfd.bin'));
    }
    await successesAfter(clients, performance.now(), SUCCESSES, BOUND_MS);
    await clients.stopLoop();
    await clients.readBack();
    return memcachedFigures(clients.records);
  } finally {
    clients?.close();
    await machine.shutdown();
  }
}

/**
 * The baseline: load the next kernel, stop serving (so no write is acknowledged after the
 * snapshot), write the memfd to `path` and fsync, kexec with no LUO session, then a new process
 * reads the file into a new memfd and listens again on the same port.
 */
async function diskRestart(machine, cacheProcess, layout, path) {
  const { server } = cacheProcess.memcached;
  const port = server.port;
  const updater = machine.spawn();
  await updater.kexecLoad(nextImage());
  await server.close();
  writeMappingFile(path, cacheProcess.mapping);
  const bytes = cacheProcess.mapping.length;
  await updater.reboot(LINUX_REBOOT_CMD_KEXEC);
  const process = machine.spawn();
  const memfd = await process.memfdCreate('kv-cache');
  await process.ftruncate(memfd, bytes);
  const mapping = await process.mmap(memfd, await process.lseek(memfd, 0, SEEK_END));
  bypassedPageCache &&= readMappingFile(path, mapping);
  rmSync(path, { force: true });
  const table = MemcachedTable.attach(mapping, memcachedTableOffset(layout));
  await MemcachedServer.listen(process, table, { port });
}

let bypassedPageCache = true;
const directory = mkdtempSync(join(tmpdir(), 'liveupdate-memcached-'));
const runs = { luo: [], disk: [] };
try {
  for (let run = 0; run < RUNS; run++) {
    // Alternated, so a machine that gets busier part-way loads both alike.
    runs.luo.push(await benchRun('luo', directory));
    runs.disk.push(await benchRun('disk', directory));
  }
} finally {
  rmSync(directory, { recursive: true, force: true });
}

const ms = (value) => Number(value.toFixed(3));
const FIELDS = [
  { field: 'outageMs', name: 'outage', unit: 'ms' },
  { field: 'requests', name: 'requests', unit: 'requests' },
  { field: 'clientErrors', name: 'client-errors', unit: 'requests' },
];
const stat = (way, field) => {
  const values = runs[way].map((figures) => figures[field]);
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
};
const figures = FIELDS.map(({ field, name, unit }) => ({
  name: `memcached.${name}.luo`,
  value: ms(stat('luo', field).median),
  unit,
  baseline: `memcached.${name}.disk`,
  baselineValue: ms(stat('disk', field).median),
}));

console.log(
  `memcached bench: node ${process.version}, ${cpus().length} cpus; a ${CACHE_BYTES / MiB} MiB ` +
    `key-value cache plus a memcached table of ${SLOTS} slots in one memfd; memcache-client: ` +
    `${KEYS} keys, a set/get loop on ${CONNECTIONS} connections; medians of ${RUNS} runs of each way`,
);
console.log(figureTable(figures));
console.log('');
const spread = (s, digits) =>
  `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})`;
console.log(
  textTable(
    ['median (min–max)', 'luo: live update', 'disk: snapshot, kexec, reload'],
    [
      ...FIELDS.map(({ field }) => [
        field,
        spread(stat('luo', field), field === 'outageMs' ? 2 : 0),
        spread(stat('disk', field), field === 'outageMs' ? 2 : 0),
      ]),
      ...['wrongValues', 'lostWrites'].map((field) => [
        `${field} (all runs)`,
        String(runs.luo.reduce((n, f) => n + f[field], 0)),
        String(runs.disk.reduce((n, f) => n + f[field], 0)),
      ]),
    ],
    (i) => i > 0,
  ),
);
console.log(
  [
    '',
    'outage: the longest time between two successful requests of the set/get loop (host clock).',
    'requests: successful requests of a run (load, loop, read-back); the loop runs from before the',
    `  restart until it has been served ${SUCCESSES} times after it, so the count follows the run's length.`,
    'client-errors: requests that failed (reset, refused connect, timeout), mostly in the outage.',
    bypassedPageCache
      ? "disk: the file is read bypassing the host's page cache (O_DIRECT), as after a real kexec."
      : "disk: O_DIRECT was refused here, so the file was likely read from the host's page cache, which flatters the baseline.",
    'Definitions: docs/memcached.md, "The demo\'s figures".',
  ].join('\n'),
);
printFigureLines(figures);
const bad = [...runs.luo, ...runs.disk].reduce((n, f) => n + f.wrongValues + f.lostWrites, 0);
if (bad > 0) {
  console.log(`FAILED: ${bad} wrong values or lost writes`);
  process.exitCode = 1;
}
