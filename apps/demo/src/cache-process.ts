import { AgentClient } from '@liveupdate/agent';
import { PAGE_SIZE, type Machine, type MemoryMapping, type Process } from '@liveupdate/machine';
import { MappedMemfd } from '@liveupdate/plugin-memfd';
import { helloRestored, startServiceProcess } from './agent-hello.js';
import { KvCache, type KvCacheLayout } from './kv-cache.js';
import { MemcachedServer } from './memcached-server.js';
import { MEMCACHED_SLOT_BYTES, MemcachedTable } from './memcached-table.js';

/**
 * The cache's service name with the agent, which is also the name of the LUO session the agent
 * keeps its memfd in.
 */
export const CACHE_SESSION = 'kv-cache';
/** The name the cache stores its memfd under with the agent. */
export const CACHE_ENTRY = 'table';
/** The key a restarted cache answers first; its answer ends the blackout. */
export const FIRST_KEY = 0;

/**
 * Where the cache's memcached table starts in its memfd: the first page after the key-value
 * table's slots, as the key-value header describes them (`4096 + slots × recordBytes`, rounded
 * up to a page). The process that retrieves the memfd finds it from that header alone.
 */
export function memcachedTableOffset(layout: Pick<KvCacheLayout, 'slots' | 'recordBytes'>): number {
  return Math.ceil((PAGE_SIZE + layout.slots * layout.recordBytes) / PAGE_SIZE) * PAGE_SIZE;
}

/** Options of {@link CacheProcess.create}. */
export interface CacheCreateOptions {
  /**
   * Also serve memcached: a {@link MemcachedTable} of `slots` item slots of
   * {@link MEMCACHED_SLOT_BYTES} after the key-value table (at {@link memcachedTableOffset}), on
   * 127.0.0.1:`port` (default 0: a free port).
   */
  readonly memcached?: { readonly slots: number; readonly port?: number };
}

/** Options of {@link CacheProcess.retrieve}. */
export interface CacheRetrieveOptions {
  /**
   * Serve memcached again from the table in the memfd, on 127.0.0.1:`port` (the old process's
   * port: its listener went with it at the kexec).
   */
  readonly memcached?: { readonly port: number };
}

/** The cache's memcached side: its table in the memfd and its server. */
export interface CacheMemcached {
  readonly table: MemcachedTable;
  readonly server: MemcachedServer;
}

/** Milliseconds of the steps of {@link CacheProcess.create}. */
export interface CacheSetupTimings {
  /** `memfd_create`, `ftruncate` and `mmap` of the whole file. */
  readonly memfd: number;
  /** Filling the table through the mapping. */
  readonly build: number;
}

/**
 * Milliseconds of the steps of the cache's side of a live update after the kexec, timed by the
 * caller (the kernel has no trace spans for them), in the order they run: the host's new agent
 * restores ({@link CacheRetrieveTimings} `agent-restore`, timed by the host), then
 * {@link CacheProcess.retrieve}.
 */
export interface CacheRetrieveTimings {
  /**
   * The new agent's `LuoAgent.restore` up to its socket listening (`onListening`), when the
   * services start: its process spawned, the socket bound and listening beside the first open of
   * `/dev/liveupdate` (LUO deserializes the incoming sessions).
   */
  readonly 'agent-restore': number;
  /**
   * The new cache connects and says `hello`, beside the rest of the agent's restore (`luod` and
   * its manifest retrieved and checked, the sessions retrieved); before answering, the agent
   * retrieves the memfd (`RETRIEVE_FD`).
   */
  readonly hello: number;
  /** `fetch`: the memfd comes over the socket (`SCM_RIGHTS`); the agent then finishes the session. */
  readonly fetch: number;
  /** `lseek(SEEK_END)` for the size, then `mmap` of the whole file. */
  readonly mmap: number;
  /** Reading the header and answering {@link FIRST_KEY}, value checked. */
  readonly 'first-key': number;
}

/** The steps of {@link CacheRetrieveTimings}, in the order they run. */
export const CACHE_RETRIEVE_PHASES = [
  'agent-restore',
  'hello',
  'fetch',
  'mmap',
  'first-key',
] as const satisfies readonly (keyof CacheRetrieveTimings)[];

/** What {@link CacheProcess.retrieve} times: all of {@link CacheRetrieveTimings} but the agent's restore. */
export type CacheServiceTimings = Omit<CacheRetrieveTimings, 'agent-restore'>;

/**
 * The cache service: a process whose key-value table lives in a memfd it has mapped. It never
 * opens `/dev/liveupdate`: across a live update it hands its memfd to the host's agent
 * (`@liveupdate/agent`, in a process of its own), which keeps it in a LUO session; the next
 * kernel's agent restores it and the next cache process fetches it and answers from the same
 * frames.
 */
export class CacheProcess {
  readonly process: Process;
  readonly memfd: number;
  readonly mapping: MemoryMapping;
  readonly cache: KvCache;
  /** The memcached table and server, when the cache serves memcached. */
  readonly memcached: CacheMemcached | undefined;

  private constructor(
    process: Process,
    memfd: number,
    mapping: MemoryMapping,
    cache: KvCache,
    memcached?: CacheMemcached,
  ) {
    this.process = process;
    this.memfd = memfd;
    this.mapping = mapping;
    this.cache = cache;
    this.memcached = memcached;
  }

  /**
   * Start a cache process on `machine` that builds a table of `layout.keys` keys in a new memfd;
   * with `options.memcached`, the memfd also holds an empty memcached table, served on 127.0.0.1.
   */
  static async create(
    machine: Machine,
    layout: KvCacheLayout,
    options: CacheCreateOptions = {},
  ): Promise<{ cacheProcess: CacheProcess; timings: CacheSetupTimings }> {
    const process = machine.spawn();
    const tableOffset = memcachedTableOffset(layout);
    const tableBytes = options.memcached
      ? PAGE_SIZE + options.memcached.slots * MEMCACHED_SLOT_BYTES
      : 0;
    let start = performance.now();
    const { fd: memfd, mapping } = await MappedMemfd.create(
      process,
      CACHE_SESSION,
      options.memcached ? tableOffset + tableBytes : layout.fileBytes,
    );
    const memfdMs = performance.now() - start;
    start = performance.now();
    const cache = KvCache.build(mapping, layout);
    const build = performance.now() - start;
    let memcached: CacheMemcached | undefined;
    if (options.memcached) {
      const table = MemcachedTable.format(mapping, {
        offset: tableOffset,
        bytes: tableBytes,
        slotBytes: MEMCACHED_SLOT_BYTES,
      });
      const server = await MemcachedServer.listen(process, table, {
        port: options.memcached.port ?? 0,
      });
      memcached = { table, server };
    }
    return {
      cacheProcess: new CacheProcess(process, memfd, mapping, cache, memcached),
      timings: { memfd: memfdMs, build },
    };
  }

  /**
   * After a live update, once the host's new agent has restored: a new cache process connects to
   * it, says `hello`, fetches its memfd, maps it and answers {@link FIRST_KEY}. `firstKeyAt` is
   * the machine time of that answer; `firstKeyOk` whether the value was right. With
   * `options.memcached` it then attaches to the memcached table in the memfd (found from the
   * key-value header, {@link memcachedTableOffset}) and listens again on the given port.
   */
  static async retrieve(
    machine: Machine,
    options: CacheRetrieveOptions = {},
  ): Promise<{
    cacheProcess: CacheProcess;
    timings: CacheServiceTimings;
    firstKeyAt: number;
    firstKeyOk: boolean;
  }> {
    return startServiceProcess(machine, async (process) => {
      const lap = stopwatch();
      const client = await AgentClient.connect(process);
      const { fetched } = await helloRestored(client, CACHE_SESSION, () =>
        client.fetch(CACHE_ENTRY),
      );
      const hello = lap();
      const [memfd] = await fetched;
      const fetch = lap();
      const { mapping } = await MappedMemfd.map(process, memfd!);
      const mmap = lap();
      const cache = KvCache.attach(mapping);
      const firstKeyOk = cache.has(FIRST_KEY);
      const firstKey = lap();
      const firstKeyAt = machine.now();
      await client.bye();
      let memcached: CacheMemcached | undefined;
      if (options.memcached) {
        const table = MemcachedTable.attach(mapping, memcachedTableOffset(cache.layout));
        const server = await MemcachedServer.listen(process, table, {
          port: options.memcached.port,
        });
        memcached = { table, server };
      }
      return {
        cacheProcess: new CacheProcess(process, memfd!, mapping, cache, memcached),
        timings: { hello, fetch, mmap, 'first-key': firstKey },
        firstKeyAt,
        firstKeyOk,
      };
    });
  }

  /**
   * Hand the memfd to the host's agent (`store`, over the socket; the agent preserves it in the
   * session `kv-cache`). The heavy step, done while the cache still serves: it keeps its own fd
   * and mapping. Returns the milliseconds it took.
   */
  async preserve(): Promise<number> {
    const start = performance.now();
    const client = await AgentClient.connect(this.process);
    try {
      await client.hello(CACHE_SESSION);
      await client.store(CACHE_ENTRY, [this.memfd], { order: 0 });
    } finally {
      await client.bye();
    }
    return performance.now() - start;
  }
}

/** Milliseconds since the previous call (or since it was made). */
function stopwatch(): () => number {
  let last = performance.now();
  return () => {
    const now = performance.now();
    const lap = now - last;
    last = now;
    return lap;
  };
}
