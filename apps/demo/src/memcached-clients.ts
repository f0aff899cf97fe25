import { MemcacheClient } from 'memcache-client';
import type { MemcachedRequestPhase, MemcachedRequestRecord } from './memcached-accounting.js';

/** Options of {@link MemcachedClients.connect}. */
export interface MemcachedClientsOptions {
  /** Keys loaded before and read back after: `key-0` … `key-(keys-1)`. */
  readonly keys: number;
  /** Client connections (one `MemcacheClient` each); key `i` belongs to connection `i % connections`. */
  readonly connections: number;
  /** A request with no answer after this many milliseconds fails (`cmdTimeout`). */
  readonly timeoutMs: number;
}

/** How long a connection's loop waits after a failed request before the next: no hot loop. */
const PAUSE_AFTER_ERROR_MS = 2;

/**
 * Host-side memcached clients nobody here wrote (npm `memcache-client`, the text protocol) on
 * 127.0.0.1:`port`, recording every request's outcome with host timestamps for
 * `memcachedFigures`: {@link load} before the live update(s), {@link startLoop} …
 * {@link stopLoop} across them (set then get of each connection's own keys, in turn), and
 * {@link readBack} after.
 */
export class MemcachedClients {
  /** Every request made, in the order they ended. */
  readonly records: MemcachedRequestRecord[] = [];
  readonly #clients: MemcacheClient[];
  readonly #keys: number;
  #writes = 0;
  #loops: Promise<void>[] = [];
  #stopping = false;

  private constructor(clients: MemcacheClient[], keys: number) {
    this.#clients = clients;
    this.#keys = keys;
  }

  /** Clients of the memcached server on 127.0.0.1:`port` (they connect at their first request). */
  static connect(port: number, options: MemcachedClientsOptions): MemcachedClients {
    const clients = Array.from(
      { length: options.connections },
      () =>
        new MemcacheClient({
          server: `127.0.0.1:${port}`,
          cmdTimeout: options.timeoutMs,
          connectTimeout: options.timeoutMs,
        }),
    );
    return new MemcachedClients(clients, options.keys);
  }

  /** Set every key once, each connection its own keys. */
  async load(): Promise<void> {
    await Promise.all(
      this.#clients.map(async (_, connection) => {
        for (const key of this.#keysOf(connection)) await this.#set('load', connection, key);
      }),
    );
  }

  /** Start each connection's loop of set, then get, over its keys, until {@link stopLoop}. */
  startLoop(): void {
    this.#stopping = false;
    this.#loops = this.#clients.map(async (_, connection) => {
      const keys = this.#keysOf(connection);
      for (let i = 0; !this.#stopping; i++) {
        const key = keys[i % keys.length]!;
        const ok =
          (await this.#set('during', connection, key)) &&
          (await this.#get('during', connection, key));
        if (!ok) await new Promise((resolve) => setTimeout(resolve, PAUSE_AFTER_ERROR_MS));
      }
    });
  }

  /** Successful requests of the loop that ended at or after host time `since`. */
  successesSince(since: number): number {
    return this.records.filter((r) => r.phase === 'during' && r.ok && r.end >= since).length;
  }

  /** Stop the loops after their current request. */
  async stopLoop(): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.#loops);
  }

  /** Get every key once. */
  async readBack(): Promise<void> {
    await Promise.all(
      this.#clients.map(async (_, connection) => {
        for (const key of this.#keysOf(connection)) await this.#get('readBack', connection, key);
      }),
    );
  }

  /** Close every connection; a running loop ends after its current request. */
  close(): void {
    this.#stopping = true;
    for (const client of this.#clients) client.shutdown();
  }

  #keysOf(connection: number): string[] {
    const keys: string[] = [];
    for (let i = connection; i < this.#keys; i += this.#clients.length) keys.push(`key-${i}`);
    return keys;
  }

  async #set(phase: MemcachedRequestPhase, connection: number, key: string): Promise<boolean> {
    // Every write's value is new, so a read names the write it saw.
    const value = `${key}=${++this.#writes}`;
    const start = performance.now();
    let ok = false;
    try {
      await this.#clients[connection]!.set(key, value);
      ok = true;
    } catch {
      // Counted: the record says it failed.
    }
    this.records.push({ phase, op: 'set', key, value, ok, start, end: performance.now() });
    return ok;
  }

  async #get(phase: MemcachedRequestPhase, connection: number, key: string): Promise<boolean> {
    const start = performance.now();
    let value: string | null = null;
    let ok = false;
    try {
      const reply = await this.#clients[connection]!.get<string>(key);
      value = reply === undefined ? null : String(reply.value);
      ok = true;
    } catch {
      // Counted: the record says it failed.
    }
    this.records.push({ phase, op: 'get', key, value, ok, start, end: performance.now() });
    return ok;
  }
}

/**
 * Resolve once `clients` have made `count` successful loop requests ending at or after `since`;
 * reject after `boundMs` saying so. Polls every 5 ms: the loops run on the same event loop.
 */
export async function successesAfter(
  clients: MemcachedClients,
  since: number,
  count: number,
  boundMs: number,
): Promise<void> {
  const end = performance.now() + boundMs;
  while (clients.successesSince(since) < count) {
    if (performance.now() > end) {
      throw new Error(
        `the memcached clients had ${clients.successesSince(since)} of ${count} successful requests ` +
          `${boundMs / 1000} s after the live update`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
