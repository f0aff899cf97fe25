import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import {
  memcachedFigures,
  type MemcachedFigures,
  type MemcachedRequestRecord,
} from './memcached-accounting.js';
import { MemcachedClients, successesAfter } from './memcached-clients.js';
import {
  LIBMEMCACHED_TOOLS,
  memccatRecord,
  memccpRecord,
  memcslap,
  missingLibmemcachedTools,
  type MemcslapRun,
} from './memcached-tools.js';

/** Item slots of the cache's memcached table: 64 MiB of memfd, touched only where written. */
export const DEMO_MEMCACHED_SLOTS = 1024;
/** Keys memcache-client loads before the update(s) and reads back after. */
export const DEMO_MEMCACHED_KEYS = 500;
/** memcache-client connections running set/get across the update(s). */
export const DEMO_MEMCACHED_CONNECTIONS = 4;
/** Successful loop requests awaited after each live update before the next step. */
const SUCCESSES_AFTER_UPDATE = 50;
/** memcslap: threads, and sets per thread, started before each live update. */
const MEMCSLAP_CONCURRENCY = 2;
const MEMCSLAP_SETS = 2000;
/** Bytes of the file memccp stores and memccat reads back. */
const FILE_BYTES = 30_000;
/** Bound of any one request or tool run, and of the wait after an update: a loaded machine is slow. */
const BOUND_MS = 30_000;

/** What {@link MemcachedDemoRun.finish} found. */
export interface MemcachedDemoResult {
  readonly figures: MemcachedFigures;
  /** One memcslap run per live update attempted, when it is installed. */
  readonly memcslapRuns: readonly MemcslapRun[];
  /** libmemcached-tools not installed (their part of the run was skipped). */
  readonly missingTools: readonly string[];
  /** Whether memccat read back, after the update(s), the file memccp stored before. */
  readonly fileReadBack: boolean | null;
}

/**
 * `pnpm demo --memcached`: host-side clients nobody here wrote drive the cache's memcached
 * server on 127.0.0.1 across the live update(s). {@link start}: memcache-client loads
 * {@link DEMO_MEMCACHED_KEYS} keys, memccp stores a file, and a set/get loop starts on
 * {@link DEMO_MEMCACHED_CONNECTIONS} connections; around each update {@link beforeUpdate} starts
 * memcslap and {@link afterUpdate} waits for the loop to be served again; {@link finish} stops
 * the loop, reads every key back, memccat reads the file, and counts the figures.
 */
export class MemcachedDemoRun {
  readonly port: number;
  readonly #clients: MemcachedClients;
  readonly #dir: string;
  readonly #file: string | null;
  readonly #toolRecords: MemcachedRequestRecord[] = [];
  #looping = false;
  /** libmemcached-tools not installed: their part of the run is left out. */
  readonly missingTools: readonly string[];
  readonly #memcslapRuns: MemcslapRun[] = [];
  #memcslap: Promise<MemcslapRun> | undefined;

  private constructor(
    port: number,
    clients: MemcachedClients,
    dir: string,
    file: string | null,
    missingTools: readonly string[],
  ) {
    this.port = port;
    this.#clients = clients;
    this.#dir = dir;
    this.#file = file;
    this.missingTools = missingTools;
  }

  /**
   * Load the keys and the file into the server on `port`. The loop starts with the first
   * {@link beforeUpdate}: what the host does before (building a VM, stamping its memory) is not
   * the live update's outage.
   */
  static async start(port: number): Promise<MemcachedDemoRun> {
    const clients = MemcachedClients.connect(port, {
      keys: DEMO_MEMCACHED_KEYS,
      connections: DEMO_MEMCACHED_CONNECTIONS,
      timeoutMs: BOUND_MS,
    });
    const missingTools = missingLibmemcachedTools();
    const dir = await mkdtemp(join(tmpdir(), 'demo-memcached-'));
    const file = missingTools.length === 0 ? join(dir, 'demo-file.bin') : null;
    const run = new MemcachedDemoRun(port, clients, dir, file, missingTools);
    try {
      await clients.load();
      if (file) {
        const bytes = Uint8Array.from({ length: FILE_BYTES }, (_, i) => (i * 131 + 17) & 0xff);
        await writeFile(file, bytes);
        run.#toolRecords.push(await memccpRecord(port, file, bytes, 'load', BOUND_MS));
      }
    } catch (error) {
      await run.close();
      throw error;
    }
    return run;
  }

  /**
   * Right before a live update: start the set/get loop (at the first update; it runs until
   * {@link finish}) and memcslap, when installed, so that both run across the update.
   */
  beforeUpdate(): void {
    if (!this.#looping) {
      this.#looping = true;
      this.#clients.startLoop();
    }
    if (this.missingTools.includes(LIBMEMCACHED_TOOLS.memcslap)) return;
    this.#memcslap = memcslap(this.port, MEMCSLAP_CONCURRENCY, MEMCSLAP_SETS, BOUND_MS);
  }

  /**
   * After a live update (or a refused one): wait until the loop has been served again, then for
   * memcslap. Returns memcslap's run, if it ran.
   */
  async afterUpdate(): Promise<MemcslapRun | undefined> {
    await successesAfter(this.#clients, performance.now(), SUCCESSES_AFTER_UPDATE, BOUND_MS);
    const run = await this.#memcslap;
    this.#memcslap = undefined;
    if (run) this.#memcslapRuns.push(run);
    return run;
  }

  /** Stop the loop, read everything back, count, and close the clients. */
  async finish(): Promise<MemcachedDemoResult> {
    try {
      await this.#clients.stopLoop();
      await this.#clients.readBack();
      let fileReadBack: boolean | null = null;
      if (this.#file) {
        const read = await memccatRecord(this.port, basename(this.#file), 'readBack', BOUND_MS);
        this.#toolRecords.push(read);
        fileReadBack = read.ok && read.value === this.#toolRecords[0]!.value;
      }
      return {
        figures: memcachedFigures([...this.#clients.records, ...this.#toolRecords]),
        memcslapRuns: this.#memcslapRuns,
        missingTools: this.missingTools,
        fileReadBack,
      };
    } finally {
      await this.close();
    }
  }

  /** Close the clients and remove the file (also after a failure). */
  async close(): Promise<void> {
    this.#clients.close();
    await this.#memcslap?.catch(() => undefined);
    await rm(this.#dir, { recursive: true, force: true });
  }
}
