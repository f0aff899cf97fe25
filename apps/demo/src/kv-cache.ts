import { PAGE_SIZE, type MemoryMapping } from '@liveupdate/machine';

// The cache file, as it lies in the memfd (little-endian, like the machine):
//
//   0     struct kv_cache_header, in the first page
//           0  u32 magic        KV_CACHE_MAGIC ("kvc1")
//           4  u32 recordBytes  size of one slot: a power of two, 16..4096
//           8  u32 slots        number of slots
//          12  u32 keys         number of keys stored
//   4096  slots[slots], recordBytes each: u32 key + 1 (0 = empty slot), then the value's u32 words
//
// Keys are the integers 0..keys-1, placed by open addressing (hash, then linear probing). Every
// value word is a function of the key and its index, so a reader can check each value without a
// copy of the data. A slot never straddles a page, so never two mapped segments either.
const KV_CACHE_MAGIC = 0x3163766b;
const HEADER_BYTES = PAGE_SIZE;
const MIN_RECORD_BYTES = 16;
const MAX_RECORD_BYTES = PAGE_SIZE;
/** Open addressing stays fast below this load factor. */
const MAX_LOAD = 0.75;

/** How a cache file of a given size holds a given number of keys. */
export interface KvCacheLayout {
  readonly fileBytes: number;
  readonly keys: number;
  readonly recordBytes: number;
  readonly slots: number;
}

/**
 * The layout of `keys` keys in a file of `fileBytes` bytes: the largest power-of-two slot (up to a
 * page) that still leaves room for `keys / 0.75` slots. Throws a `RangeError` saying what to change
 * when the keys do not fit.
 */
export function planKvCache(fileBytes: number, keys: number): KvCacheLayout {
  if (!Number.isSafeInteger(keys) || keys < 1 || keys >= 0xffff_ffff) {
    throw new RangeError(`the cache holds 1 to ${0xffff_fffe} keys, not ${keys}`);
  }
  if (fileBytes % PAGE_SIZE !== 0) {
    throw new RangeError(`the cache file must be a whole number of pages, not ${fileBytes} bytes`);
  }
  const needed = Math.ceil(keys / MAX_LOAD);
  for (let recordBytes = MAX_RECORD_BYTES; recordBytes >= MIN_RECORD_BYTES; recordBytes /= 2) {
    const slots = Math.floor((fileBytes - HEADER_BYTES) / recordBytes);
    if (slots >= needed)
      return { fileBytes, keys, recordBytes, slots: Math.min(slots, 0xffff_ffff) };
  }
  const minimum = HEADER_BYTES + needed * MIN_RECORD_BYTES;
  throw new RangeError(
    `${keys} keys need at least ${Math.ceil(minimum / 1024 ** 2)} MiB of cache (${MIN_RECORD_BYTES}-byte slots at load ${MAX_LOAD}); raise --mib or lower --keys`,
  );
}

/** `fmix32` of MurmurHash3: spreads consecutive keys over the table. */
function mix(key: number): number {
  let h = key;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Word `index` of the value of `key`, given `seed = mix(key)`. */
const valueWord = (seed: number, index: number): number =>
  Math.imul(seed ^ index, 0x9e3779b1) >>> 0;

/** Result of {@link KvCache.verifyAll}. */
export interface KvCacheCheck {
  readonly verified: number;
  readonly mismatches: number;
}

/**
 * A key-value cache whose table is the memory of a mapped memfd. It reads and writes the RAM
 * frames behind the mapping directly (`mmap` gives live views), so building a table of hundreds
 * of MiB costs no syscall per key, and the table a new kernel hands back is used where it lies.
 */
export class KvCache {
  readonly layout: KvCacheLayout;
  /**
   * The mapping cut in chunks of `#chunkBytes`, the largest power of two that divides every
   * segment's offset and length (the folio size, when all folios are alike): for each chunk, the
   * words of its segment and the index in them where it starts. A table per chunk rather than per
   * page keeps attaching to a 1 GiB cache O(folios).
   */
  readonly #chunkBytes: number;
  readonly #chunkWords: Uint32Array[];
  readonly #chunkStart: Float64Array;
  readonly #recordWords: number;

  private constructor(mapping: MemoryMapping, layout: KvCacheLayout) {
    this.layout = layout;
    let chunkBytes = PAGE_SIZE;
    for (const segment of mapping.segments) {
      if (segment.offset % PAGE_SIZE !== 0 || segment.bytes.byteOffset % 4 !== 0) {
        throw new Error(`mapping segment at offset ${segment.offset} is not page-aligned`);
      }
    }
    const divides = (size: number) =>
      mapping.segments.every((s) => s.offset % size === 0 && s.bytes.byteLength % size === 0);
    while (chunkBytes < mapping.length && divides(chunkBytes * 2)) chunkBytes *= 2;
    const chunks = Math.ceil(mapping.length / chunkBytes);
    this.#chunkBytes = chunkBytes;
    this.#chunkWords = new Array<Uint32Array>(chunks);
    this.#chunkStart = new Float64Array(chunks);
    for (const { offset, bytes } of mapping.segments) {
      const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
      const first = offset / chunkBytes;
      for (let chunk = 0; chunk * chunkBytes < bytes.byteLength; chunk++) {
        this.#chunkWords[first + chunk] = words;
        this.#chunkStart[first + chunk] = (chunk * chunkBytes) / 4;
      }
    }
    this.#recordWords = layout.recordBytes >>> 2;
  }

  /** Lay out and fill a new cache of `layout.keys` keys in `mapping`, which must be zeroed. */
  static build(mapping: MemoryMapping, layout: KvCacheLayout): KvCache {
    if (mapping.length < layout.fileBytes) {
      throw new RangeError(`mapping of ${mapping.length} bytes is smaller than the cache`);
    }
    const cache = new KvCache(mapping, layout);
    cache.#writeHeader();
    for (let key = 0; key < layout.keys; key++) cache.#insert(key);
    return cache;
  }

  /** The cache a previous process left in `mapping`; throws if the header is not a cache's. */
  static attach(mapping: MemoryMapping): KvCache {
    const first = mapping.segments[0];
    if (!first || first.bytes.byteLength < 16) throw new Error('the mapping holds no cache header');
    const header = new DataView(first.bytes.buffer, first.bytes.byteOffset, 16);
    const magic = header.getUint32(0, true);
    if (magic !== KV_CACHE_MAGIC) {
      throw new Error(`no cache in this memfd: magic 0x${magic.toString(16)}`);
    }
    const layout: KvCacheLayout = {
      fileBytes: mapping.length,
      recordBytes: header.getUint32(4, true),
      slots: header.getUint32(8, true),
      keys: header.getUint32(12, true),
    };
    if (HEADER_BYTES + layout.slots * layout.recordBytes > mapping.length) {
      throw new Error(`cache header describes more slots than the mapping holds`);
    }
    return new KvCache(mapping, layout);
  }

  /**
   * Whether `key` is in the cache with exactly the value it was built with: the lookup a client's
   * `GET` does, followed by a check of every word of the value.
   */
  has(key: number): boolean {
    const slot = this.#find(key);
    if (slot < 0) return false;
    const words = this.#words(slot);
    const base = this.#index(slot);
    const seed = mix(key);
    for (let i = 1; i < this.#recordWords; i++) {
      if (words[base + i] !== valueWord(seed, i)) return false;
    }
    return true;
  }

  /** Look every key up and check its value. */
  verifyAll(): KvCacheCheck {
    let verified = 0;
    for (let key = 0; key < this.layout.keys; key++) if (this.has(key)) verified++;
    return { verified, mismatches: this.layout.keys - verified };
  }

  /**
   * {@link verifyAll} in slices of `keysPerSlice` keys, yielding to the event loop between them,
   * so the VMM's guest loop (same thread) keeps draining its ring while the cache is checked.
   */
  async verifyAllYielding(keysPerSlice = 20_000): Promise<KvCacheCheck> {
    let verified = 0;
    for (let from = 0; from < this.layout.keys; from += keysPerSlice) {
      const to = Math.min(this.layout.keys, from + keysPerSlice);
      for (let key = from; key < to; key++) if (this.has(key)) verified++;
      await new Promise((resolve) => setImmediate(resolve));
    }
    return { verified, mismatches: this.layout.keys - verified };
  }

  #writeHeader(): void {
    const words = this.#words(-1);
    words[0] = KV_CACHE_MAGIC;
    words[1] = this.layout.recordBytes;
    words[2] = this.layout.slots;
    words[3] = this.layout.keys;
  }

  #insert(key: number): void {
    const { slots } = this.layout;
    let slot = mix(key) % slots;
    for (;;) {
      const words = this.#words(slot);
      const base = this.#index(slot);
      if (words[base] === 0) {
        words[base] = key + 1;
        const seed = mix(key);
        for (let i = 1; i < this.#recordWords; i++) words[base + i] = valueWord(seed, i);
        return;
      }
      slot = slot + 1 === slots ? 0 : slot + 1;
    }
  }

  /** The slot holding `key`, or -1. */
  #find(key: number): number {
    const { slots } = this.layout;
    const tag = key + 1;
    let slot = mix(key) % slots;
    for (let probes = 0; probes < slots; probes++) {
      const stored = this.#words(slot)[this.#index(slot)];
      if (stored === tag) return slot;
      if (stored === 0) return -1;
      slot = slot + 1 === slots ? 0 : slot + 1;
    }
    return -1;
  }

  /** The words of the segment holding `slot` (-1: the header). */
  #words(slot: number): Uint32Array {
    return this.#chunkWords[Math.floor(this.#offset(slot) / this.#chunkBytes)]!;
  }

  /** Index of `slot`'s first word in {@link #words}. */
  #index(slot: number): number {
    // Division, not shifts: a file may be larger than 4 GiB. A slot never straddles a chunk.
    const offset = this.#offset(slot);
    const chunk = Math.floor(offset / this.#chunkBytes);
    return this.#chunkStart[chunk]! + (offset - chunk * this.#chunkBytes) / 4;
  }

  #offset(slot: number): number {
    return slot < 0 ? 0 : HEADER_BYTES + slot * this.layout.recordBytes;
  }
}
