import { PAGE_SIZE } from '@liveupdate/machine';
import { describe, expect, it } from 'vitest';
import { KvCache, planKvCache } from './kv-cache.js';
import { MemcachedTable } from './memcached-table.js';
import { scatteredMapping } from '../test/scattered-mapping.js';

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);
const text = (value: Uint8Array | undefined): string => new TextDecoder().decode(value);
const NOW = 1_800_000_000;

function table(slots = 8, slotBytes = 1024): MemcachedTable {
  const pages = 1 + Math.ceil((slots * slotBytes) / PAGE_SIZE);
  return MemcachedTable.format(scatteredMapping(pages), {
    offset: 0,
    bytes: pages * PAGE_SIZE,
    slotBytes,
  });
}

describe('MemcachedTable', () => {
  it('holds values of any length up to slotBytes - 280, across segment boundaries', () => {
    const t = table(4, 8192);
    expect(t.maxValueBytes).toBe(8192 - 280);
    const full = Uint8Array.from({ length: t.maxValueBytes }, (_, i) => (i * 7 + 3) & 0xff);
    expect(t.store('set', 'full', 1, 0, full, NOW)).toBe('STORED');
    expect(t.store('set', 'empty', 2, 0, new Uint8Array(0), NOW)).toBe('STORED');
    expect(t.store('set', 'over', 1, 0, new Uint8Array(t.maxValueBytes + 1), NOW)).toBe(
      'too-large',
    );
    expect(t.get('full', NOW)?.value).toEqual(full);
    expect(t.get('empty', NOW)?.value).toEqual(new Uint8Array(0));
    expect(t.get('over', NOW)).toBeNull();
  });

  it('set, add, replace, append, prepend and cas follow protocol.txt', () => {
    const t = table();
    expect(t.store('add', 'k', 3, 0, bytes('one'), NOW)).toBe('STORED');
    expect(t.store('add', 'k', 3, 0, bytes('two'), NOW)).toBe('NOT_STORED');
    expect(t.store('replace', 'absent', 0, 0, bytes('x'), NOW)).toBe('NOT_STORED');
    expect(t.store('append', 'absent', 0, 0, bytes('x'), NOW)).toBe('NOT_STORED');
    expect(t.store('replace', 'k', 4, 0, bytes('mid'), NOW)).toBe('STORED');
    expect(t.store('append', 'k', 9, 0, bytes('>'), NOW)).toBe('STORED');
    expect(t.store('prepend', 'k', 9, 0, bytes('<'), NOW)).toBe('STORED');
    const item = t.get('k', NOW)!;
    expect(text(item.value)).toBe('<mid>');
    expect(item.flags).toBe(4); // append and prepend keep the flags
    expect(t.store('cas', 'k', 0, 0, bytes('new'), NOW, item.cas + 1n)).toBe('EXISTS');
    expect(t.store('cas', 'absent', 0, 0, bytes('new'), NOW, item.cas)).toBe('NOT_FOUND');
    expect(t.store('cas', 'k', 5, 0, bytes('new'), NOW, item.cas)).toBe('STORED');
    const after = t.get('k', NOW)!;
    expect(text(after.value)).toBe('new');
    expect(after.cas).toBeGreaterThan(item.cas);
    expect(t.items).toBe(1);
  });

  it('items expire at their exptime; touch moves it; delete leaves a tombstone probing passes', () => {
    const t = table(4);
    t.store('set', 'short', 0, NOW + 10, bytes('a'), NOW);
    t.store('set', 'forever', 0, 0, bytes('b'), NOW);
    expect(text(t.get('short', NOW + 9)?.value)).toBe('a');
    expect(t.touch('short', NOW + 100, NOW + 9)).toBe(true);
    expect(text(t.get('short', NOW + 50)?.value)).toBe('a');
    expect(t.get('short', NOW + 100)).toBeNull();
    expect(t.touch('short', 0, NOW + 100)).toBe(false);
    expect(text(t.get('forever', 0xffff_fff0)?.value)).toBe('b');
    // Fill all four slots, delete some, and every remaining key is still found.
    for (const key of ['c', 'd', 'e']) t.store('set', key, 0, 0, bytes(key), NOW);
    expect(t.store('set', 'f', 0, 0, bytes('f'), NOW)).toBe('no-memory');
    expect(t.delete('c', NOW)).toBe(true);
    expect(t.delete('c', NOW)).toBe(false);
    for (const key of ['d', 'e']) expect(text(t.get(key, NOW)?.value)).toBe(key);
    expect(t.store('set', 'f', 0, 0, bytes('f'), NOW)).toBe('STORED');
    expect(t.items).toBe(4);
  });

  it('incr wraps at 2^64, decr stops at 0, a non-number is refused', () => {
    const t = table();
    t.store('set', 'n', 0, 0, bytes('18446744073709551614'), NOW);
    expect(t.incr('n', 3n, false, NOW)).toBe(1n);
    expect(t.incr('n', 5n, true, NOW)).toBe(0n);
    expect(t.incr('n', 41n, false, NOW)).toBe(41n);
    expect(text(t.get('n', NOW)?.value)).toBe('41');
    expect(t.incr('absent', 1n, false, NOW)).toBeNull();
    t.store('set', 's', 0, 0, bytes('12a'), NOW);
    expect(t.incr('s', 1n, false, NOW)).toBe('non-numeric');
    t.store('set', 'big', 0, 0, bytes('18446744073709551616'), NOW);
    expect(t.incr('big', 1n, false, NOW)).toBe('non-numeric');
  });

  it('a table attached again from the same memory has the same items and cas counter', () => {
    const mapping = scatteredMapping(1 + 4);
    const first = MemcachedTable.format(mapping, {
      offset: 0,
      bytes: 5 * PAGE_SIZE,
      slotBytes: 2048,
    });
    first.store('set', 'k', 7, 0, bytes('kept'), NOW);
    const cas = first.get('k', NOW)!.cas;
    const again = MemcachedTable.attach(mapping, 0);
    expect(again.slots).toBe(8);
    expect(again.get('k', NOW)).toEqual({ flags: 7, exptime: 0, cas, value: bytes('kept') });
    again.store('set', 'k', 7, 0, bytes('next'), NOW);
    expect(again.get('k', NOW)!.cas).toBe(cas + 1n);
  });

  it('attach refuses a header that is not one format writes, naming the field', () => {
    const mapping = scatteredMapping(3);
    expect(() => MemcachedTable.attach(mapping, 0)).toThrow(/magic 0x0/);
    MemcachedTable.format(mapping, { offset: 0, bytes: 3 * PAGE_SIZE, slotBytes: 4096 });
    const header = new DataView(mapping.segments[0]!.bytes.buffer);
    header.setUint32(8, 3, true);
    expect(() => MemcachedTable.attach(mapping, 0)).toThrow(/slots 3 do not fit/);
    header.setUint32(8, 2, true);
    header.setUint32(4, 3000, true);
    expect(() => MemcachedTable.attach(mapping, 0)).toThrow(/slotBytes 3000/);
    header.setUint32(4, 4096, true);
    header.setUint32(16, 3, true);
    expect(() => MemcachedTable.attach(mapping, 0)).toThrow(/used 3 of 2 slots/);
  });

  it('a damaged item is an error naming the slot and its fields, not a wrong value', () => {
    const mapping = scatteredMapping(3);
    const t = MemcachedTable.format(mapping, { offset: 0, bytes: 3 * PAGE_SIZE, slotBytes: 4096 });
    t.store('set', 'k', 0, 0, bytes('v'), NOW);
    for (const segment of mapping.segments.slice(1)) {
      if (segment.bytes[0] === 1) segment.bytes[1] = 0;
    }
    expect(() => t.get('k', NOW)).toThrow(/memcached_item \d: state 1, keyBytes 0/);
  });

  it('shares one memfd with the KvCache table: each stays whole when the other is written', () => {
    const kvBytes = 16 * PAGE_SIZE;
    const mapping = scatteredMapping(16 + 1 + 4);
    const kv = KvCache.build(mapping, planKvCache(kvBytes, 100));
    const t = MemcachedTable.format(mapping, {
      offset: kvBytes,
      bytes: 5 * PAGE_SIZE,
      slotBytes: 4096,
    });
    for (let i = 0; i < 4; i++)
      t.store('set', `k${i}`, i, 0, new Uint8Array(3000).fill(i + 1), NOW);
    expect(kv.verifyAll()).toEqual({ verified: 100, mismatches: 0 });
    expect(KvCache.attach(mapping).verifyAll()).toEqual({ verified: 100, mismatches: 0 });
    const again = MemcachedTable.attach(mapping, kvBytes);
    for (let i = 0; i < 4; i++) {
      expect(again.get(`k${i}`, NOW)?.value).toEqual(new Uint8Array(3000).fill(i + 1));
    }
  });
});
