import { MEMCACHED_KEY_MAX, type MemcachedStoreMode } from './memcached-table.js';

/**
 * A request of the memcached text protocol (memcached's doc/protocol.txt), parsed. Keys are
 * latin1 strings: one character per byte of the wire. `error` is a line the server answers with
 * an error instead of running it (`reply` without its `\r\n`); `close` when the connection ends
 * after the reply.
 */
export type MemcachedRequest =
  | { readonly kind: 'get'; readonly withCas: boolean; readonly keys: readonly string[] }
  | {
      readonly kind: 'store';
      readonly mode: MemcachedStoreMode;
      readonly key: string;
      readonly flags: number;
      readonly exptime: number;
      readonly casUnique: bigint;
      readonly value: Uint8Array;
      readonly noreply: boolean;
    }
  | { readonly kind: 'delete'; readonly key: string; readonly noreply: boolean }
  | {
      readonly kind: 'incr';
      readonly key: string;
      readonly delta: bigint;
      readonly decr: boolean;
      readonly noreply: boolean;
    }
  | {
      readonly kind: 'touch';
      readonly key: string;
      readonly exptime: number;
      readonly noreply: boolean;
    }
  | { readonly kind: 'flush'; readonly delay: number; readonly noreply: boolean }
  | { readonly kind: 'verbosity'; readonly noreply: boolean }
  | { readonly kind: 'stats' }
  | { readonly kind: 'version' }
  | { readonly kind: 'quit' }
  | { readonly kind: 'error'; readonly reply: string; readonly close: boolean };

/**
 * The longest command line taken: a multi-key `get` of many keys fits. Past it without a newline
 * the client is not speaking the protocol: `CLIENT_ERROR line too long`, and the connection ends.
 */
export const MEMCACHED_LINE_MAX = 64 * 1024;

const BAD_FORMAT = 'CLIENT_ERROR bad command line format';
const U32_MAX = 0xffff_ffff;
const I32_MIN = -0x8000_0000;
const I32_MAX = 0x7fff_ffff;
const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** The header of a storage command whose data block is still arriving. */
interface PendingStore {
  readonly request: Omit<Extract<MemcachedRequest, { kind: 'store' }>, 'value'> | null;
  /** The data block and its `\r\n`. */
  readonly bytes: number;
  /** The reply once the block is swallowed, when the command was refused. */
  readonly refusal: string | null;
}

/**
 * An incremental parser of the memcached text protocol: {@link feed} it bytes as they come off the
 * connection, split anywhere, and take the complete requests, in order. Lines end with `\r\n` (a
 * bare `\n` is taken too, as memcached does); a storage command's data block is `<bytes>` bytes
 * and `\r\n`. Errors follow memcached: an unknown command or a wrong number of tokens is `ERROR`,
 * a malformed token `CLIENT_ERROR bad command line format`, a data block not ended by `\r\n`
 * `CLIENT_ERROR bad data chunk`; the connection stays usable. A storage command refused for its
 * line but whose length parsed has its data block swallowed, so bytes of a value are never run as
 * commands. A value longer than `maxValueBytes` is `SERVER_ERROR object too large for cache`, its
 * block swallowed.
 */
export class MemcachedParser {
  readonly #maxValueBytes: number;
  #buffer = new Uint8Array(0);
  #pending: PendingStore | null = null;
  #closed = false;

  constructor(maxValueBytes: number) {
    this.#maxValueBytes = maxValueBytes;
  }

  /** Take `bytes` off the connection and return the requests they complete. */
  feed(bytes: Uint8Array): MemcachedRequest[] {
    if (this.#closed) return [];
    const joined = new Uint8Array(this.#buffer.length + bytes.length);
    joined.set(this.#buffer);
    joined.set(bytes, this.#buffer.length);
    this.#buffer = joined;
    const requests: MemcachedRequest[] = [];
    for (;;) {
      const request = this.#next();
      if (!request) break;
      requests.push(request);
      if (request.kind === 'quit' || (request.kind === 'error' && request.close)) {
        this.#closed = true;
        break;
      }
    }
    return requests;
  }

  #next(): MemcachedRequest | null {
    const pending = this.#pending;
    if (pending) {
      if (this.#buffer.length < pending.bytes) return null;
      const block = this.#take(pending.bytes);
      this.#pending = null;
      if (pending.refusal) return { kind: 'error', reply: pending.refusal, close: false };
      const end = block.length - 2;
      if (block[end] !== 0x0d || block[end + 1] !== 0x0a) {
        return { kind: 'error', reply: 'CLIENT_ERROR bad data chunk', close: false };
      }
      return { ...pending.request!, value: block.slice(0, end) };
    }
    const newline = this.#buffer.indexOf(0x0a);
    if (newline < 0) {
      if (this.#buffer.length <= MEMCACHED_LINE_MAX) return null;
      return { kind: 'error', reply: 'CLIENT_ERROR line too long', close: true };
    }
    const raw = this.#take(newline + 1);
    const end = raw.length - (raw[newline - 1] === 0x0d ? 2 : 1);
    const line = Buffer.from(raw.buffer, raw.byteOffset, end).toString('latin1');
    return this.#command(line) ?? this.#next();
  }

  /** The request of a command line; null when it is a storage header (its block comes next). */
  #command(line: string): MemcachedRequest | null {
    const tokens = line.split(' ').filter((token) => token.length > 0);
    const [name, ...args] = tokens;
    const error = (reply: string): MemcachedRequest => ({ kind: 'error', reply, close: false });
    const noreplyAt = (count: number): boolean | null => {
      if (args.length === count) return false;
      if (args.length === count + 1 && args[count] === 'noreply') return true;
      return null;
    };
    switch (name) {
      case 'get':
      case 'gets':
        if (args.length === 0) return error('ERROR');
        if (!args.every(validKey)) return error(BAD_FORMAT);
        return { kind: 'get', withCas: name === 'gets', keys: args };
      case 'set':
      case 'add':
      case 'replace':
      case 'append':
      case 'prepend':
      case 'cas':
        return this.#store(name, args);
      case 'delete': {
        // "delete <key> 0" is an old form memcached still takes.
        const rest = args.slice(1).filter((token, i) => !(i === 0 && token === '0'));
        const noreply = rest.length === 1 && rest[0] === 'noreply';
        if (args.length === 0 || (rest.length > 0 && !noreply)) {
          return error(`${BAD_FORMAT}.  Usage: delete <key> [noreply]`);
        }
        if (!validKey(args[0]!)) return error(BAD_FORMAT);
        return { kind: 'delete', key: args[0]!, noreply };
      }
      case 'incr':
      case 'decr': {
        const noreply = noreplyAt(2);
        if (noreply === null) return error('ERROR');
        if (!validKey(args[0]!)) return error(BAD_FORMAT);
        const delta = unsigned64(args[1]!);
        if (delta === null) return error('CLIENT_ERROR invalid numeric delta argument');
        return { kind: 'incr', key: args[0]!, delta, decr: name === 'decr', noreply };
      }
      case 'touch': {
        const noreply = noreplyAt(2);
        if (noreply === null) return error('ERROR');
        if (!validKey(args[0]!)) return error(BAD_FORMAT);
        const exptime = signed32(args[1]!);
        if (exptime === null) return error('CLIENT_ERROR invalid exptime argument');
        return { kind: 'touch', key: args[0]!, exptime, noreply };
      }
      case 'flush_all': {
        const noreply = args.at(-1) === 'noreply';
        const rest = noreply ? args.slice(0, -1) : args;
        if (rest.length > 1) return error('ERROR');
        const delay = rest.length === 0 ? 0 : signed32(rest[0]!);
        if (delay === null) return error(BAD_FORMAT);
        return { kind: 'flush', delay, noreply };
      }
      case 'verbosity': {
        // A level, which this server has no use for, or noreply, or both (memcached 1.6).
        const noreply = args.at(-1) === 'noreply';
        const rest = noreply ? args.slice(0, -1) : args;
        if (args.length < 1 || args.length > 2 || rest.length > 1) return error('ERROR');
        if (rest.length === 1 && unsigned32(rest[0]!) === null) return error(BAD_FORMAT);
        return { kind: 'verbosity', noreply };
      }
      case 'stats':
        // "stats <group>" (items, slabs, …) is not kept: memcached answers unknown groups so.
        return args.length === 0 ? { kind: 'stats' } : error('ERROR');
      // memcached 1.6 looks at the first token only of these two.
      case 'version':
        return { kind: 'version' };
      case 'quit':
        return { kind: 'quit' };
      default:
        return error('ERROR');
    }
  }

  /** A storage header: sets {@link #pending} and returns null, or the error it is. */
  #store(name: string, args: readonly string[]): MemcachedRequest | null {
    const mode = name as MemcachedStoreMode;
    const fixed = mode === 'cas' ? 5 : 4;
    const noreply =
      args.length === fixed ? false : args.length === fixed + 1 && args[fixed] === 'noreply';
    if (args.length !== fixed && !noreply) {
      return { kind: 'error', reply: 'ERROR', close: false };
    }
    const [key, flagsText, exptimeText, bytesText, casText] = args as string[];
    const bytes = signed32(bytesText!);
    if (bytes === null || bytes < 0) {
      return { kind: 'error', reply: BAD_FORMAT, close: false };
    }
    const flags = unsigned32(flagsText!);
    const exptime = signed32(exptimeText!);
    const casUnique = mode === 'cas' ? unsigned64(casText!) : 0n;
    const refuse = (refusal: string): null => {
      this.#pending = { request: null, bytes: bytes + 2, refusal };
      return null;
    };
    if (!validKey(key!) || flags === null || exptime === null || casUnique === null) {
      return refuse(BAD_FORMAT);
    }
    if (bytes > this.#maxValueBytes) return refuse('SERVER_ERROR object too large for cache');
    this.#pending = {
      request: { kind: 'store', mode, key: key!, flags, exptime, casUnique, noreply },
      bytes: bytes + 2,
      refusal: null,
    };
    return null;
  }

  #take(count: number): Uint8Array {
    const taken = this.#buffer.subarray(0, count);
    this.#buffer = this.#buffer.subarray(count);
    return taken;
  }
}

/** A key: 1 to 250 bytes, no control characters (whitespace never reaches here: it splits). */
function validKey(key: string): boolean {
  if (key.length < 1 || key.length > MEMCACHED_KEY_MAX) return false;
  for (let i = 0; i < key.length; i++) {
    const code = key.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return false;
  }
  return true;
}

const DIGITS = /^\d+$/;

function unsigned32(text: string): number | null {
  if (!DIGITS.test(text)) return null;
  const value = Number(text);
  return value <= U32_MAX ? value : null;
}

function signed32(text: string): number | null {
  if (!/^-?\d+$/.test(text)) return null;
  const value = Number(text);
  return value >= I32_MIN && value <= I32_MAX ? value : null;
}

function unsigned64(text: string): bigint | null {
  if (!DIGITS.test(text)) return null;
  const value = BigInt(text);
  return value <= U64_MAX ? value : null;
}
