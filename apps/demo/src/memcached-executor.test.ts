import { PAGE_SIZE, type MemoryMapping } from '@liveupdate/machine';
import { describe, expect, it } from 'vitest';
import { MEMCACHED_VERSION, MemcachedExecutor } from './memcached-executor.js';
import { MemcachedParser } from './memcached-parser.js';
import { MemcachedStats } from './memcached-stats.js';
import { MemcachedTable } from './memcached-table.js';
import { scatteredMapping } from '../test/scattered-mapping.js';

const bytes = (text: string): Uint8Array => Uint8Array.from(text, (c) => c.charCodeAt(0));
const text = (value: Uint8Array): string => String.fromCharCode(...value);

/** A table, a clock the test moves, and a function that runs protocol text and returns the replies. */
function server(): {
  run: (input: string) => string;
  stats: MemcachedStats;
  clock: { now: number };
  mapping: MemoryMapping;
} {
  const mapping = scatteredMapping(1 + 4);
  const table = MemcachedTable.format(mapping, {
    offset: 0,
    bytes: 5 * PAGE_SIZE,
    slotBytes: 1024,
  });
  const stats = new MemcachedStats();
  const clock = { now: 1_800_000_000 };
  const executor = new MemcachedExecutor(table, stats, () => clock.now);
  const parser = new MemcachedParser(table.maxValueBytes);
  const run = (input: string): string =>
    parser
      .feed(bytes(input))
      .map((request) => executor.run(request))
      .map((reply) => (reply ? text(reply) : ''))
      .join('');
  return { run, stats, clock, mapping };
}

describe('MemcachedExecutor', () => {
  it('answers get and gets of several keys with VALUE lines, misses left out, then END', () => {
    const { run } = server();
    expect(run('set a 5 0 2\r\nhi\r\nset b 0 0 0\r\n\r\n')).toBe('STORED\r\nSTORED\r\n');
    expect(run('get a nope b\r\n')).toBe('VALUE a 5 2\r\nhi\r\nVALUE b 0 0\r\n\r\nEND\r\n');
    const gets = run('gets a\r\n');
    const cas = /^VALUE a 5 2 (\d+)\r\nhi\r\nEND\r\n$/.exec(gets)?.[1];
    expect(cas).toBeDefined();
    expect(run(`cas a 1 0 1 ${cas}\r\nx\r\ncas a 1 0 1 ${cas}\r\ny\r\n`)).toBe(
      'STORED\r\nEXISTS\r\n',
    );
    expect(run('cas zz 0 0 1 1\r\nx\r\n')).toBe('NOT_FOUND\r\n');
  });

  it('answers delete, incr, decr and touch, and noreply silences the answer but not errors', () => {
    const { run } = server();
    expect(run('set n 0 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nincr zz 1\r\n')).toBe(
      'STORED\r\n15\r\n0\r\nNOT_FOUND\r\n',
    );
    expect(run('set s 0 0 1 noreply\r\nx\r\nincr s 1\r\nincr n 1 noreply\r\nget n\r\n')).toBe(
      'CLIENT_ERROR cannot increment or decrement non-numeric value\r\nVALUE n 0 1\r\n1\r\nEND\r\n',
    );
    expect(run('touch n 10\r\ntouch zz 10\r\ndelete n\r\ndelete n\r\ndelete s noreply\r\n')).toBe(
      'TOUCHED\r\nNOT_FOUND\r\nDELETED\r\nNOT_FOUND\r\n',
    );
    // The block is "xy\r"; the "\n" left over is an empty command line, as in memcached.
    expect(run('bogus noreply\r\nset k 0 0 1 noreply\r\nxy\r\n')).toBe(
      'ERROR\r\nCLIENT_ERROR bad data chunk\r\nERROR\r\n',
    );
  });

  it('exptime: relative up to 30 days, absolute above, negative already expired', () => {
    const { run, clock } = server();
    const now = clock.now;
    run(`set rel 0 100 1\r\nr\r\nset abs 0 ${now + 200} 1\r\na\r\nset neg 0 -1 1\r\nn\r\n`);
    expect(run('get neg\r\n')).toBe('END\r\n');
    clock.now = now + 99;
    expect(run('get rel abs\r\n')).toBe('VALUE rel 0 1\r\nr\r\nVALUE abs 0 1\r\na\r\nEND\r\n');
    clock.now = now + 100;
    expect(run('get rel abs\r\n')).toBe('VALUE abs 0 1\r\na\r\nEND\r\n');
    expect(run('touch abs 0\r\n')).toBe('TOUCHED\r\n');
    clock.now = now + 1_000_000;
    expect(run('get abs\r\n')).toBe('VALUE abs 0 1\r\na\r\nEND\r\n');
  });

  it('flush_all empties the table now, or makes the items stored so far expire after a delay', () => {
    const { run, clock } = server();
    run('set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\n');
    expect(run('flush_all\r\nget a b\r\n')).toBe('OK\r\nEND\r\n');
    run('set a 0 0 1\r\n1\r\nset b 0 5 1\r\n2\r\n');
    expect(run('flush_all 10 noreply\r\nverbosity 1\r\n')).toBe('OK\r\n');
    clock.now += 9;
    expect(run('get a\r\n')).toBe('VALUE a 0 1\r\n1\r\nEND\r\n');
    clock.now += 1;
    expect(run('get a b\r\n')).toBe('END\r\n');
  });

  it('a damaged item is SERVER_ERROR naming it, for that request only', () => {
    const { run, mapping } = server();
    run('set a 0 0 1\r\n1\r\n');
    // Every page of the scattered mapping is its own buffer: find the item's state byte.
    const page = mapping.segments.slice(1).find((segment) => segment.bytes.includes(1))!;
    const slot = page.bytes.indexOf(1);
    page.bytes[slot + 1] = 251; // keyBytes past KEY_MAX_LENGTH
    expect(run('get a\r\nversion\r\n')).toMatch(
      /^SERVER_ERROR memcached_item \d+: state 1, keyBytes 251, valueBytes 1\r\nVERSION /,
    );
  });

  it('version, stats counters and too-large values', () => {
    const { run } = server();
    expect(run('version\r\n')).toBe(`VERSION ${MEMCACHED_VERSION}\r\n`);
    run('set a 0 0 1\r\n1\r\nget a b\r\ntouch a 0\r\ndelete b\r\n');
    const stats = run('stats\r\n');
    expect(stats.endsWith('END\r\n')).toBe(true);
    const stat = (name: string): string | undefined =>
      new RegExp(`^STAT ${name} (\\S+)\\r$`, 'm').exec(stats)?.[1];
    expect([stat('cmd_get'), stat('get_hits'), stat('get_misses')]).toEqual(['2', '1', '1']);
    expect([stat('cmd_set'), stat('cmd_touch'), stat('delete_misses')]).toEqual(['1', '1', '1']);
    expect([stat('curr_items'), stat('item_size_max')]).toEqual(['1', String(1024 - 280)]);
    const big = 'x'.repeat(1024 - 280 + 1);
    expect(run(`set big 0 0 ${big.length}\r\n${big}\r\nget big\r\n`)).toBe(
      'SERVER_ERROR object too large for cache\r\nEND\r\n',
    );
  });
});
