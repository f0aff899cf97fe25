import { LiveUpdateDevice } from '@liveupdate/core';
import { type Machine, type MemoryMapping, type Process } from '@liveupdate/machine';
import { MappedMemfd } from '@liveupdate/plugin-memfd';
import { KvCache, type KvCacheLayout } from './kv-cache.js';

/** Name of the LUO session the cache hands over in. */
export const CACHE_SESSION = 'kv-cache';
/** Token of the cache's memfd in that session. */
export const CACHE_TOKEN = 1;
/** The key a restarted cache answers first; its answer ends the blackout. */
export const FIRST_KEY = 0;

/** Milliseconds of the steps of {@link CacheProcess.create}. */
export interface CacheSetupTimings {
  /** `memfd_create`, `ftruncate` and `mmap` of the whole file. */
  readonly memfd: number;
  /** Filling the table through the mapping. */
  readonly build: number;
}

/**
 * Milliseconds of the steps of {@link CacheProcess.retrieve}, timed by the caller (the kernel has
 * no trace spans for them), in the order they run.
 */
export interface CacheRetrieveTimings {
  /** First open of `/dev/liveupdate` after the kexec: LUO deserializes the incoming sessions. */
  readonly 'liveupdate-open': number;
  readonly 'retrieve-session': number;
  /** `RETRIEVE_FD`: the memfd handler rebuilds the file from its preserved folios. */
  readonly 'retrieve-fd': number;
  /** `SESSION_FINISH`: the live update of this session is over. */
  readonly finish: number;
  /** `lseek(SEEK_END)` for the size, then `mmap` of the whole file. */
  readonly mmap: number;
  /** Reading the header and answering {@link FIRST_KEY}, value checked. */
  readonly 'first-key': number;
}

/**
 * The cache service: a process whose key-value table lives in a memfd it has mapped. Across a
 * live update it keeps its session fd open, so the kernel hands the memfd over; the next kernel's cache process retrieves it and answers from the same frames.
 */
export class CacheProcess {
  readonly process: Process;
  readonly memfd: number;
  readonly mapping: MemoryMapping;
  readonly cache: KvCache;

  private constructor(process: Process, memfd: number, mapping: MemoryMapping, cache: KvCache) {
    this.process = process;
    this.memfd = memfd;
    this.mapping = mapping;
    this.cache = cache;
  }

  /** Start a cache process on `machine` and build a table of `layout.keys` keys in a new memfd. */
  static async create(
    machine: Machine,
    layout: KvCacheLayout,
  ): Promise<{ cacheProcess: CacheProcess; timings: CacheSetupTimings }> {
    const process = machine.spawn();
    let start = performance.now();
    const { fd: memfd, mapping } = await MappedMemfd.create(
      process,
      CACHE_SESSION,
      layout.fileBytes,
    );
    const memfdMs = performance.now() - start;
    start = performance.now();
    const cache = KvCache.build(mapping, layout);
    const build = performance.now() - start;
    return {
      cacheProcess: new CacheProcess(process, memfd, mapping, cache),
      timings: { memfd: memfdMs, build },
    };
  }

  /**
   * A new cache process, after a live update, takes the cache back: opens `/dev/liveupdate`,
   * retrieves the session and the memfd, finishes the session, maps the file and answers
   * {@link FIRST_KEY}. `firstKeyAt` is the machine time of that answer; `firstKeyOk` whether the
   * value was right.
   */
  static async retrieve(machine: Machine): Promise<{
    cacheProcess: CacheProcess;
    timings: CacheRetrieveTimings;
    firstKeyAt: number;
    firstKeyOk: boolean;
  }> {
    const process = machine.spawn();
    const lap = stopwatch();
    const device = await LiveUpdateDevice.open(process);
    const open = lap();
    const session = await device.retrieveSession(CACHE_SESSION);
    const retrieveSession = lap();
    const memfd = await session.retrieveFd(CACHE_TOKEN);
    const retrieveFd = lap();
    await session.finish();
    const finish = lap();
    const { mapping } = await MappedMemfd.map(process, memfd);
    const mmap = lap();
    const cache = KvCache.attach(mapping);
    const firstKeyOk = cache.has(FIRST_KEY);
    const firstKey = lap();
    const firstKeyAt = machine.now();
    // Its files are retrieved and finished; closing the incoming session just drops it.
    await session.close();
    // `/dev/liveupdate` opens exclusively: other services (the VMM) retrieve their sessions next.
    await device.close();
    return {
      cacheProcess: new CacheProcess(process, memfd, mapping, cache),
      timings: {
        'liveupdate-open': open,
        'retrieve-session': retrieveSession,
        'retrieve-fd': retrieveFd,
        finish,
        mmap,
        'first-key': firstKey,
      },
      firstKeyAt,
      firstKeyOk,
    };
  }

  /**
   * Hand the memfd to the next kernel: open `/dev/liveupdate`, create the session, close the
   * device (it opens exclusively, and other services need it too) and preserve the memfd in the
   * session. The heavy step, done while the cache still serves. The session fd is never closed:
   * the process holds it until it ends at the kexec, after LUO has serialized it. Returns the
   * milliseconds it took.
   */
  async preserve(): Promise<number> {
    const start = performance.now();
    const device = await LiveUpdateDevice.open(this.process);
    const session = await device.createSession(CACHE_SESSION);
    await device.close();
    await session.preserveFd(this.memfd, CACHE_TOKEN);
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
