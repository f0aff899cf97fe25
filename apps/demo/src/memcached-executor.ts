import type { MemcachedRequest } from './memcached-parser.js';
import type { MemcachedStats } from './memcached-stats.js';
import { MemcachedTableError, type MemcachedTable } from './memcached-table.js';

/** What `version` answers: the protocol level served, and whose server it is. */
export const MEMCACHED_VERSION = '1.6.0-liveupdate';

/** memcached's `REALTIME_MAXDELTA`: an exptime up to 30 days is relative, above it absolute. */
const REALTIME_MAXDELTA = 60 * 60 * 24 * 30;

const latin1 = (text: string): Uint8Array => Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff);

/**
 * Runs parsed requests against the table and gives each reply's bytes (protocol.txt), or null
 * when there is none (`noreply`, `quit`). Every run is synchronous: requests of several
 * connections never interleave inside one.
 */
export class MemcachedExecutor {
  readonly #table: MemcachedTable;
  readonly #stats: MemcachedStats;
  readonly #now: () => number;

  /** `now` gives the time in Unix seconds (the expiry clock; a test may set it). */
  constructor(table: MemcachedTable, stats: MemcachedStats, now: () => number) {
    this.#table = table;
    this.#stats = stats;
    this.#now = now;
  }

  /**
   * The reply to `request`. The table came through a live update: a damaged item it meets is
   * `SERVER_ERROR` and the item named, for this request only; the connection goes on.
   */
  run(request: MemcachedRequest): Uint8Array | null {
    try {
      return this.#run(request);
    } catch (error) {
      if (!(error instanceof MemcachedTableError)) throw error;
      return line(`SERVER_ERROR ${error.message}`);
    }
  }

  #run(request: MemcachedRequest): Uint8Array | null {
    const now = this.#now();
    const table = this.#table;
    const stats = this.#stats;
    switch (request.kind) {
      case 'get': {
        const parts: Uint8Array[] = [];
        for (const key of request.keys) {
          stats.cmdGet++;
          const item = table.get(key, now);
          if (!item) {
            stats.getMisses++;
            continue;
          }
          stats.getHits++;
          const cas = request.withCas ? ` ${item.cas}` : '';
          parts.push(latin1(`VALUE ${key} ${item.flags} ${item.value.length}${cas}\r\n`));
          parts.push(item.value, latin1('\r\n'));
        }
        parts.push(latin1('END\r\n'));
        return concat(parts);
      }
      case 'store': {
        stats.cmdSet++;
        const result = table.store(
          request.mode,
          request.key,
          request.flags,
          absoluteExptime(request.exptime, now),
          request.value,
          now,
          request.casUnique,
        );
        if (request.mode === 'cas') {
          if (result === 'STORED') stats.casHits++;
          else if (result === 'EXISTS') stats.casBadval++;
          else if (result === 'NOT_FOUND') stats.casMisses++;
        }
        if (request.noreply) return null;
        if (result === 'too-large' || result === 'no-memory') {
          return line('SERVER_ERROR out of memory storing object');
        }
        return line(result);
      }
      case 'delete': {
        const deleted = table.delete(request.key, now);
        if (deleted) stats.deleteHits++;
        else stats.deleteMisses++;
        return request.noreply ? null : line(deleted ? 'DELETED' : 'NOT_FOUND');
      }
      case 'incr': {
        const value = table.incr(request.key, request.delta, request.decr, now);
        if (value === null) {
          if (request.decr) stats.decrMisses++;
          else stats.incrMisses++;
        } else if (request.decr) stats.decrHits++;
        else stats.incrHits++;
        if (value === 'non-numeric') {
          return line('CLIENT_ERROR cannot increment or decrement non-numeric value');
        }
        if (request.noreply) return null;
        return line(value === null ? 'NOT_FOUND' : value.toString());
      }
      case 'touch': {
        stats.cmdTouch++;
        const touched = table.touch(request.key, absoluteExptime(request.exptime, now), now);
        if (touched) stats.touchHits++;
        else stats.touchMisses++;
        return request.noreply ? null : line(touched ? 'TOUCHED' : 'NOT_FOUND');
      }
      case 'flush': {
        table.flush(absoluteExptime(request.delay, now), now);
        return request.noreply ? null : line('OK');
      }
      case 'verbosity':
        return request.noreply ? null : line('OK');
      case 'stats':
        return this.#statsReply(now);
      case 'version':
        return line(`VERSION ${MEMCACHED_VERSION}`);
      case 'quit':
        return null;
      case 'error':
        return line(request.reply);
    }
  }

  #statsReply(now: number): Uint8Array {
    const s = this.#stats;
    const table = this.#table;
    const entries: [string, string | number][] = [
      ['uptime', now - s.startedAt],
      ['time', now],
      ['version', MEMCACHED_VERSION],
      ['curr_connections', s.currConnections],
      ['total_connections', s.totalConnections],
      ['cmd_get', s.cmdGet],
      ['cmd_set', s.cmdSet],
      ['cmd_touch', s.cmdTouch],
      ['get_hits', s.getHits],
      ['get_misses', s.getMisses],
      ['delete_misses', s.deleteMisses],
      ['delete_hits', s.deleteHits],
      ['incr_misses', s.incrMisses],
      ['incr_hits', s.incrHits],
      ['decr_misses', s.decrMisses],
      ['decr_hits', s.decrHits],
      ['cas_misses', s.casMisses],
      ['cas_hits', s.casHits],
      ['cas_badval', s.casBadval],
      ['touch_hits', s.touchHits],
      ['touch_misses', s.touchMisses],
      ['limit_maxbytes', table.layout.bytes],
      ['item_size_max', table.maxValueBytes],
      ['curr_items', table.items],
    ];
    return latin1(entries.map(([name, value]) => `STAT ${name} ${value}\r\n`).join('') + 'END\r\n');
  }
}

/**
 * memcached's `realtime`: 0 never expires; a negative exptime has expired already (1: a second
 * into 1970); up to 30 days it counts from `now`; above, it is a Unix time.
 */
function absoluteExptime(exptime: number, now: number): number {
  if (exptime === 0) return 0;
  if (exptime < 0) return 1;
  return Math.min(exptime <= REALTIME_MAXDELTA ? now + exptime : exptime, 0xffff_ffff);
}

function line(text: string): Uint8Array {
  return latin1(`${text}\r\n`);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
