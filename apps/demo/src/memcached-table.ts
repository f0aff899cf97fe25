import { PAGE_SIZE, readMapping, writeMapping, type MemoryMapping } from '@liveupdate/machine';

// The memcached item table, as it lies in the memfd from `offset` (little-endian, like the machine):
//
//   0     struct memcached_table_header, in the first page
//           0  u32 magic      MEMCACHED_TABLE_MAGIC ("mct1")
//           4  u32 slotBytes  size of one item slot: a power of two, 512..1 MiB
//           8  u32 slots      number of slots
//          12  u32 items      live items (expired ones count until a lookup drops them)
//          16  u32 used       slots not empty: items and tombstones (probing ends at an empty one)
//          20  u32 reserved
//          24  u64 lastCas    the last cas unique given; a new item gets the next
//   4096  slots[slots], slotBytes each: struct memcached_item
//           0  u8  state      0 empty, 1 item, 2 tombstone (deleted: probing goes on past it)
//           1  u8  keyBytes   1..250
//           2  u16 reserved
//           4  u32 flags      the client's, opaque
//           8  u32 exptime    absolute Unix seconds, 0 = never
//          12  u32 valueBytes 0..slotBytes - 280
//          16  u64 cas        its cas unique
//          24  key[250], then value from byte 280
//
// Keys are placed by open addressing (FNV-1a, then linear probing). The table, cas counter
// included, lives in the memfd, so the process that retrieves the memfd after a live update serves
// the same items, with cas uniques that keep growing.
const MEMCACHED_TABLE_MAGIC = 0x3174636d;
const HEADER_BYTES = PAGE_SIZE;
const ITEM_HEADER_BYTES = 24;
const VALUE_OFFSET = 280;
const MIN_SLOT_BYTES = 512;
const MAX_SLOT_BYTES = 1024 * 1024;
const EMPTY = 0;
const ITEM = 1;
const TOMBSTONE = 2;

/**
 * The item slot the cache uses: 64 KiB, so values up to 65,256 bytes (64 KiB - 280). A table may
 * choose another power of two from 512 bytes to 1 MiB.
 */
export const MEMCACHED_SLOT_BYTES = 64 * 1024;

/** The longest key memcached takes, in bytes (`KEY_MAX_LENGTH`). */
export const MEMCACHED_KEY_MAX = 250;

/** An item as a `get` returns it. */
export interface MemcachedItem {
  readonly flags: number;
  /** Absolute Unix seconds, 0 = never. */
  readonly exptime: number;
  readonly cas: bigint;
  readonly value: Uint8Array;
}

/** The storage commands: `set`, `add`, `replace`, `append`, `prepend`, `cas`. */
export type MemcachedStoreMode = 'set' | 'add' | 'replace' | 'append' | 'prepend' | 'cas';

/**
 * What a store did, named by the memcached reply it gives; `too-large` and `no-memory` are
 * `SERVER_ERROR`s.
 */
export type MemcachedStoreResult =
  'STORED' | 'NOT_STORED' | 'EXISTS' | 'NOT_FOUND' | 'too-large' | 'no-memory';

/** Where a table lies in a mapping and how it is cut. */
export interface MemcachedTableLayout {
  /** Byte offset of the header in the mapping: a whole number of pages. */
  readonly offset: number;
  /** Bytes of the table, header included. */
  readonly bytes: number;
  /** Bytes of one item slot: a power of two, 512 to 1 MiB; values hold 280 bytes less. */
  readonly slotBytes: number;
}

/** A table header or item that is not one this code writes: the message names the field. */
export class MemcachedTableError extends Error {
  override readonly name = 'MemcachedTableError';
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

function fnv1a(bytes: Uint8Array): number {
  let hash = FNV_OFFSET;
  for (const byte of bytes) hash = Math.imul(hash ^ byte, FNV_PRIME);
  return hash >>> 0;
}

const equalBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  a.length === b.length && a.every((byte, i) => byte === b[i]);

/** A slot's fixed part, read once per probe. */
interface SlotHead {
  readonly state: number;
  readonly key: Uint8Array;
  readonly flags: number;
  readonly exptime: number;
  readonly valueBytes: number;
  readonly cas: bigint;
}

/**
 * The items of the memcached server: a hash table of fixed-size slots in a mapped memfd, with
 * memcached's item fields (flags, exptime, cas unique) and values of any length up to
 * {@link maxValueBytes}. Keys are bytes (the server hands them over as latin1 strings, one
 * character per byte). Every method runs to its end without waiting, so commands of several
 * connections never interleave inside one.
 */
export class MemcachedTable {
  readonly layout: MemcachedTableLayout;
  readonly slots: number;
  readonly #mapping: MemoryMapping;

  private constructor(mapping: MemoryMapping, layout: MemcachedTableLayout, slots: number) {
    this.#mapping = mapping;
    this.layout = layout;
    this.slots = slots;
  }

  /**
   * Lay out an empty table in `mapping` at `layout.offset` (the bytes must be zeroed, as a new
   * memfd's are). `RangeError` saying what to change when the layout does not fit.
   */
  static format(mapping: MemoryMapping, layout: MemcachedTableLayout): MemcachedTable {
    const { offset, bytes, slotBytes } = layout;
    if (offset % PAGE_SIZE !== 0 || bytes % PAGE_SIZE !== 0) {
      throw new RangeError(`the table's offset ${offset} and size ${bytes} must be whole pages`);
    }
    if (!isSlotSize(slotBytes)) {
      throw new RangeError(
        `slot size ${slotBytes}: want a power of two, ${MIN_SLOT_BYTES} to ${MAX_SLOT_BYTES}`,
      );
    }
    if (offset + bytes > mapping.length) {
      throw new RangeError(`a table of ${bytes} bytes at ${offset} overruns the mapping`);
    }
    const slots = Math.min(Math.floor((bytes - HEADER_BYTES) / slotBytes), 0xffff_ffff);
    if (slots < 1) throw new RangeError(`${bytes} bytes hold no slot of ${slotBytes} bytes`);
    const table = new MemcachedTable(mapping, layout, slots);
    const header = new DataView(new ArrayBuffer(32));
    header.setUint32(0, MEMCACHED_TABLE_MAGIC, true);
    header.setUint32(4, slotBytes, true);
    header.setUint32(8, slots, true);
    writeMapping(mapping, offset, new Uint8Array(header.buffer));
    return table;
  }

  /**
   * The table a previous process left at `offset` of `mapping`. The memfd came through a live
   * update: the header is checked against what {@link format} writes, and an error names the
   * field and its value.
   */
  static attach(mapping: MemoryMapping, offset: number): MemcachedTable {
    if (offset % PAGE_SIZE !== 0 || offset + HEADER_BYTES > mapping.length) {
      throw new RangeError(`no table header fits at offset ${offset}`);
    }
    const header = new DataView(readMapping(mapping, offset, 32).buffer);
    const magic = header.getUint32(0, true);
    if (magic !== MEMCACHED_TABLE_MAGIC) {
      throw new MemcachedTableError(
        `memcached_table_header.magic 0x${magic.toString(16)}: no table here`,
      );
    }
    const slotBytes = header.getUint32(4, true);
    if (!isSlotSize(slotBytes)) {
      throw new MemcachedTableError(
        `memcached_table_header.slotBytes ${slotBytes} is not a slot size`,
      );
    }
    const slots = header.getUint32(8, true);
    const bytes = HEADER_BYTES + slots * slotBytes;
    if (slots < 1 || offset + bytes > mapping.length) {
      throw new MemcachedTableError(`memcached_table_header.slots ${slots} do not fit the mapping`);
    }
    const items = header.getUint32(12, true);
    const used = header.getUint32(16, true);
    if (used > slots || items > used) {
      throw new MemcachedTableError(
        `memcached_table_header.items ${items} / used ${used} of ${slots} slots`,
      );
    }
    return new MemcachedTable(mapping, { offset, bytes, slotBytes }, slots);
  }

  /** The largest value a slot holds: `slotBytes - 280`. */
  get maxValueBytes(): number {
    return this.layout.slotBytes - VALUE_OFFSET;
  }

  /** Live items (expired ones count until a lookup drops them). */
  get items(): number {
    return this.#header(12);
  }

  /** The item of `key`, or null when absent or expired at `now` (Unix seconds). */
  get(key: string, now: number): MemcachedItem | null {
    const slot = this.#lookup(key, now).found;
    if (slot < 0) return null;
    const head = this.#head(slot);
    return {
      flags: head.flags,
      exptime: head.exptime,
      cas: head.cas,
      value: readMapping(this.#mapping, this.#slotOffset(slot) + VALUE_OFFSET, head.valueBytes),
    };
  }

  /**
   * A storage command (protocol.txt, "Storage commands"): `set` always stores; `add` only when
   * the key is absent, `replace`, `append` and `prepend` only when present (else `NOT_STORED`);
   * `cas` when present (else `NOT_FOUND`) with cas unique `casUnique` (else `EXISTS`). `append`
   * and `prepend` keep the item's flags and exptime. A value longer than {@link maxValueBytes}:
   * `too-large`; no free slot: `no-memory`. Every store gives the item a new cas unique.
   */
  store(
    mode: MemcachedStoreMode,
    key: string,
    flags: number,
    exptime: number,
    value: Uint8Array,
    now: number,
    casUnique = 0n,
  ): MemcachedStoreResult {
    const { found, free } = this.#lookup(key, now);
    const current = found >= 0 ? this.#head(found) : null;
    if (mode === 'add' && current) return 'NOT_STORED';
    if ((mode === 'replace' || mode === 'append' || mode === 'prepend') && !current) {
      return 'NOT_STORED';
    }
    if (mode === 'cas') {
      if (!current) return 'NOT_FOUND';
      if (current.cas !== casUnique) return 'EXISTS';
    }
    let data = value;
    if (current && (mode === 'append' || mode === 'prepend')) {
      const old = readMapping(
        this.#mapping,
        this.#slotOffset(found) + VALUE_OFFSET,
        current.valueBytes,
      );
      data = new Uint8Array(old.length + value.length);
      data.set(mode === 'append' ? old : value, 0);
      data.set(mode === 'append' ? value : old, mode === 'append' ? old.length : value.length);
      flags = current.flags;
      exptime = current.exptime;
    }
    if (data.length > this.maxValueBytes) return 'too-large';
    const slot = found >= 0 ? found : free;
    if (slot < 0) return 'no-memory';
    if (found < 0) {
      if (this.#head(slot).state === EMPTY) this.#setHeader(16, this.#header(16) + 1);
      this.#setHeader(12, this.items + 1);
    }
    this.#write(slot, key, flags, exptime, data);
    return 'STORED';
  }

  /** `delete`: whether `key` was there (and not expired). */
  delete(key: string, now: number): boolean {
    const slot = this.#lookup(key, now).found;
    if (slot < 0) return false;
    this.#drop(slot);
    return true;
  }

  /** `touch`: a new exptime (absolute, 0 = never) for `key`; whether it was there. */
  touch(key: string, exptime: number, now: number): boolean {
    const slot = this.#lookup(key, now).found;
    if (slot < 0) return false;
    const field = new DataView(new ArrayBuffer(4));
    field.setUint32(0, exptime, true);
    writeMapping(this.#mapping, this.#slotOffset(slot) + 8, new Uint8Array(field.buffer));
    return true;
  }

  /**
   * `flush_all`: every item stored before now expires at `at` (absolute Unix seconds; 0 or a
   * time not after `now`: at once, and the table is emptied).
   */
  flush(at: number, now: number): void {
    if (at === 0 || at <= now) {
      for (let slot = 0; slot < this.slots; slot++) {
        writeMapping(this.#mapping, this.#slotOffset(slot), new Uint8Array([EMPTY]));
      }
      this.#setHeader(12, 0);
      this.#setHeader(16, 0);
      return;
    }
    const field = new DataView(new ArrayBuffer(4));
    field.setUint32(0, at, true);
    for (let slot = 0; slot < this.slots; slot++) {
      const head = this.#head(slot);
      if (head.state !== ITEM || (head.exptime !== 0 && head.exptime <= at)) continue;
      writeMapping(this.#mapping, this.#slotOffset(slot) + 8, new Uint8Array(field.buffer));
    }
  }

  /**
   * `incr`/`decr` by `delta`: the value, a decimal number below 2^64, becomes its sum (wrapping
   * at 2^64, as memcached) or difference (stopping at 0), written back as decimal digits with a
   * new cas unique. `null` when absent; `'non-numeric'` when the value is not such a number.
   */
  incr(key: string, delta: bigint, decr: boolean, now: number): bigint | 'non-numeric' | null {
    const item = this.get(key, now);
    if (!item) return null;
    const digits = item.value.length >= 1 && item.value.length <= 20;
    if (!digits || !item.value.every((byte) => byte >= 0x30 && byte <= 0x39)) return 'non-numeric';
    const current = BigInt(String.fromCharCode(...item.value));
    if (current > 0xffff_ffff_ffff_ffffn) return 'non-numeric';
    const next = decr
      ? current > delta
        ? current - delta
        : 0n
      : (current + delta) & 0xffff_ffff_ffff_ffffn;
    const slot = this.#lookup(key, now).found;
    this.#write(slot, key, item.flags, item.exptime, new TextEncoder().encode(next.toString()));
    return next;
  }

  /**
   * Find `key`: the slot holding it (`found`, or -1) and the first slot a new item may take
   * (`free`: a tombstone passed or the empty slot that ended the probe; -1 when the table is
   * full). An item found expired at `now` is dropped on the way.
   */
  #lookup(key: string, now: number): { found: number; free: number } {
    const bytes = keyBytes(key);
    let slot = fnv1a(bytes) % this.slots;
    let free = -1;
    for (let probes = 0; probes < this.slots; probes++) {
      const head = this.#head(slot);
      if (head.state === EMPTY) return { found: -1, free: free >= 0 ? free : slot };
      if (head.state === TOMBSTONE) {
        if (free < 0) free = slot;
      } else if (equalBytes(head.key, bytes)) {
        if (head.exptime === 0 || head.exptime > now) return { found: slot, free };
        this.#drop(slot);
        return { found: -1, free: free >= 0 ? free : slot };
      }
      slot = slot + 1 === this.slots ? 0 : slot + 1;
    }
    return { found: -1, free };
  }

  #head(slot: number): SlotHead {
    const raw = readMapping(this.#mapping, this.#slotOffset(slot), VALUE_OFFSET);
    const view = new DataView(raw.buffer);
    const state = raw[0]!;
    const keyLength = raw[1]!;
    const valueBytes = view.getUint32(12, true);
    // The memfd may come from an older process through a live update: distrust it.
    if (
      state > TOMBSTONE ||
      (state === ITEM && (keyLength < 1 || keyLength > MEMCACHED_KEY_MAX)) ||
      valueBytes > this.maxValueBytes
    ) {
      throw new MemcachedTableError(
        `memcached_item ${slot}: state ${state}, keyBytes ${keyLength}, valueBytes ${valueBytes}`,
      );
    }
    return {
      state,
      key: raw.subarray(ITEM_HEADER_BYTES, ITEM_HEADER_BYTES + keyLength),
      flags: view.getUint32(4, true),
      exptime: view.getUint32(8, true),
      valueBytes,
      cas: view.getBigUint64(16, true),
    };
  }

  #write(slot: number, key: string, flags: number, exptime: number, value: Uint8Array): void {
    const bytes = keyBytes(key);
    const cas = this.#nextCas();
    const record = new Uint8Array(VALUE_OFFSET + value.length);
    const view = new DataView(record.buffer);
    record[0] = ITEM;
    record[1] = bytes.length;
    view.setUint32(4, flags, true);
    view.setUint32(8, exptime, true);
    view.setUint32(12, value.length, true);
    view.setBigUint64(16, cas, true);
    record.set(bytes, ITEM_HEADER_BYTES);
    record.set(value, VALUE_OFFSET);
    writeMapping(this.#mapping, this.#slotOffset(slot), record);
  }

  #drop(slot: number): void {
    writeMapping(this.#mapping, this.#slotOffset(slot), new Uint8Array([TOMBSTONE]));
    this.#setHeader(12, this.items - 1);
  }

  #nextCas(): bigint {
    const offset = this.layout.offset + 24;
    const cas = new DataView(readMapping(this.#mapping, offset, 8).buffer).getBigUint64(0, true);
    const next = new DataView(new ArrayBuffer(8));
    next.setBigUint64(0, cas + 1n, true);
    writeMapping(this.#mapping, offset, new Uint8Array(next.buffer));
    return cas + 1n;
  }

  #header(field: number): number {
    return new DataView(readMapping(this.#mapping, this.layout.offset + field, 4).buffer).getUint32(
      0,
      true,
    );
  }

  #setHeader(field: number, value: number): void {
    const bytes = new DataView(new ArrayBuffer(4));
    bytes.setUint32(0, value, true);
    writeMapping(this.#mapping, this.layout.offset + field, new Uint8Array(bytes.buffer));
  }

  #slotOffset(slot: number): number {
    return this.layout.offset + HEADER_BYTES + slot * this.layout.slotBytes;
  }
}

function isSlotSize(bytes: number): boolean {
  return (
    Number.isInteger(bytes) &&
    bytes >= MIN_SLOT_BYTES &&
    bytes <= MAX_SLOT_BYTES &&
    (bytes & (bytes - 1)) === 0
  );
}

/** A key's bytes: one per character (latin1), as the server reads them off the wire. */
function keyBytes(key: string): Uint8Array {
  return Uint8Array.from(key, (c) => c.charCodeAt(0) & 0xff);
}
