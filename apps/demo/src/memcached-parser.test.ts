import { describe, expect, it } from 'vitest';
import { MEMCACHED_LINE_MAX, MemcachedParser, type MemcachedRequest } from './memcached-parser.js';

const bytes = (text: string): Uint8Array => Uint8Array.from(text, (c) => c.charCodeAt(0));
const parse = (text: string, max = 1024): MemcachedRequest[] =>
  new MemcachedParser(max).feed(bytes(text));
const error = (reply: string, close = false): MemcachedRequest => ({ kind: 'error', reply, close });

describe('MemcachedParser', () => {
  it('parses get and gets of one or many keys', () => {
    expect(parse('get a\r\ngets a bb  ccc\r\n')).toEqual([
      { kind: 'get', withCas: false, keys: ['a'] },
      { kind: 'get', withCas: true, keys: ['a', 'bb', 'ccc'] },
    ]);
  });

  it('parses every storage command with its data block, and noreply', () => {
    const requests = parse(
      'set k 5 0 3\r\nabc\r\nadd k 0 60 0 noreply\r\n\r\nreplace k 1 2 1\r\nx\r\n' +
        'append k 0 0 1\r\ny\r\nprepend k 0 0 1\r\nz\r\ncas k 7 -1 2 99 noreply\r\nhi\r\n',
    );
    expect(requests).toEqual([
      {
        kind: 'store',
        mode: 'set',
        key: 'k',
        flags: 5,
        exptime: 0,
        casUnique: 0n,
        noreply: false,
        value: bytes('abc'),
      },
      {
        kind: 'store',
        mode: 'add',
        key: 'k',
        flags: 0,
        exptime: 60,
        casUnique: 0n,
        noreply: true,
        value: bytes(''),
      },
      {
        kind: 'store',
        mode: 'replace',
        key: 'k',
        flags: 1,
        exptime: 2,
        casUnique: 0n,
        noreply: false,
        value: bytes('x'),
      },
      {
        kind: 'store',
        mode: 'append',
        key: 'k',
        flags: 0,
        exptime: 0,
        casUnique: 0n,
        noreply: false,
        value: bytes('y'),
      },
      {
        kind: 'store',
        mode: 'prepend',
        key: 'k',
        flags: 0,
        exptime: 0,
        casUnique: 0n,
        noreply: false,
        value: bytes('z'),
      },
      {
        kind: 'store',
        mode: 'cas',
        key: 'k',
        flags: 7,
        exptime: -1,
        casUnique: 99n,
        noreply: true,
        value: bytes('hi'),
      },
    ]);
  });

  it('keeps a value whose bytes look like commands or hold CR LF as data', () => {
    expect(parse('set k 0 0 13\r\nget x\r\nquit\r\n\r\nversion\r\n')).toEqual([
      {
        kind: 'store',
        mode: 'set',
        key: 'k',
        flags: 0,
        exptime: 0,
        casUnique: 0n,
        noreply: false,
        value: bytes('get x\r\nquit\r\n'),
      },
      { kind: 'version' },
    ]);
  });

  it('parses delete, incr, decr, touch, stats, version and quit', () => {
    expect(
      parse(
        'delete a\r\ndelete b noreply\r\ndelete c 0\r\nincr n 18446744073709551615\r\n' +
          'decr n 2 noreply\r\ntouch t 100\r\ntouch t -1 noreply\r\nstats\r\nversion\r\nquit\r\n',
      ),
    ).toEqual([
      { kind: 'delete', key: 'a', noreply: false },
      { kind: 'delete', key: 'b', noreply: true },
      { kind: 'delete', key: 'c', noreply: false },
      { kind: 'incr', key: 'n', delta: 18446744073709551615n, decr: false, noreply: false },
      { kind: 'incr', key: 'n', delta: 2n, decr: true, noreply: true },
      { kind: 'touch', key: 't', exptime: 100, noreply: false },
      { kind: 'touch', key: 't', exptime: -1, noreply: true },
      { kind: 'stats' },
      { kind: 'version' },
      { kind: 'quit' },
    ]);
  });

  it('parses flush_all and verbosity with their optional arguments, as memcached 1.6', () => {
    expect(
      parse(
        'flush_all\r\nflush_all 10\r\nflush_all noreply\r\nflush_all 0 noreply\r\nflush_all x\r\n' +
          'verbosity 1\r\nverbosity noreply\r\nverbosity 0 noreply\r\nverbosity\r\nverbosity a b c\r\n',
      ),
    ).toEqual([
      { kind: 'flush', delay: 0, noreply: false },
      { kind: 'flush', delay: 10, noreply: false },
      { kind: 'flush', delay: 0, noreply: true },
      { kind: 'flush', delay: 0, noreply: true },
      error('CLIENT_ERROR bad command line format'),
      { kind: 'verbosity', noreply: false },
      { kind: 'verbosity', noreply: true },
      { kind: 'verbosity', noreply: true },
      error('ERROR'),
      error('ERROR'),
    ]);
    // memcached 1.6 reads only the first token of version and quit.
    expect(parse('version foo bar\r\nquit now\r\n')).toEqual([
      { kind: 'version' },
      { kind: 'quit' },
    ]);
  });

  it('stops at quit: what follows is never parsed', () => {
    const parser = new MemcachedParser(1024);
    expect(parser.feed(bytes('quit\r\nget a\r\n'))).toEqual([{ kind: 'quit' }]);
    expect(parser.feed(bytes('get b\r\n'))).toEqual([]);
  });

  it('takes a bare LF as the end of a line', () => {
    expect(parse('get a\nversion\n')).toEqual([
      { kind: 'get', withCas: false, keys: ['a'] },
      { kind: 'version' },
    ]);
  });

  it('joins lines and values split across reads at every byte', () => {
    const stream = 'set key 3 0 10\r\n0123456789\r\ngets key other\r\n';
    const whole = parse(stream);
    for (let cut = 1; cut < stream.length; cut++) {
      const parser = new MemcachedParser(1024);
      const requests = [
        ...parser.feed(bytes(stream.slice(0, cut))),
        ...parser.feed(bytes(stream.slice(cut))),
      ];
      expect(requests, `cut at ${cut}`).toEqual(whole);
    }
    const parser = new MemcachedParser(1024);
    const oneByOne = [...stream].flatMap((c) => parser.feed(bytes(c)));
    expect(oneByOne).toEqual(whole);
  });

  it('answers unknown commands and wrong token counts with ERROR, and goes on', () => {
    expect(
      parse('bogus\r\nget\r\nset k 0 0\r\nincr n\r\ntouch t\r\nstats items\r\n\r\nversion\r\n'),
    ).toEqual([
      error('ERROR'),
      error('ERROR'),
      error('ERROR'),
      error('ERROR'),
      error('ERROR'),
      error('ERROR'),
      error('ERROR'),
      { kind: 'version' },
    ]);
  });

  it('refuses bad keys and numbers with CLIENT_ERROR; a refused value is swallowed, not run', () => {
    const long = 'k'.repeat(251);
    expect(
      parse(
        `get ${long}\r\nset ${long} 0 0 10\r\ndelete x\r\n\r\nset k -1 0 1\r\nz\r\n` +
          `set k 0 0 -1\r\nincr n -1\r\ntouch t x\r\ndelete a b\r\nget k${'\x01'}\r\nversion\r\n`,
      ),
    ).toEqual([
      error('CLIENT_ERROR bad command line format'),
      error('CLIENT_ERROR bad command line format'),
      error('CLIENT_ERROR bad command line format'),
      error('CLIENT_ERROR bad command line format'),
      error('CLIENT_ERROR invalid numeric delta argument'),
      error('CLIENT_ERROR invalid exptime argument'),
      error('CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]'),
      error('CLIENT_ERROR bad command line format'),
      { kind: 'version' },
    ]);
    // A key of exactly 250 bytes is fine.
    expect(parse(`get ${'k'.repeat(250)}\r\n`)).toEqual([
      { kind: 'get', withCas: false, keys: ['k'.repeat(250)] },
    ]);
  });

  it('a data block not ended by CR LF is a bad data chunk; the next command still runs', () => {
    expect(parse('set k 0 0 2\r\nabcd\r\nversion\r\n')).toEqual([
      error('CLIENT_ERROR bad data chunk'),
      error('ERROR'),
      { kind: 'version' },
    ]);
  });

  it('a value over the limit is SERVER_ERROR object too large, and its block is swallowed', () => {
    expect(parse('set k 0 0 5\r\n12345\r\nset k 0 0 4\r\n1234\r\n', 4)).toEqual([
      error('SERVER_ERROR object too large for cache'),
      {
        kind: 'store',
        mode: 'set',
        key: 'k',
        flags: 0,
        exptime: 0,
        casUnique: 0n,
        noreply: false,
        value: bytes('1234'),
      },
    ]);
  });

  it('a line longer than the limit without a newline ends the connection', () => {
    const parser = new MemcachedParser(1024);
    expect(parser.feed(bytes('g'.repeat(MEMCACHED_LINE_MAX)))).toEqual([]);
    expect(parser.feed(bytes('gg'))).toEqual([error('CLIENT_ERROR line too long', true)]);
    expect(parser.feed(bytes('\r\nversion\r\n'))).toEqual([]);
  });
});
