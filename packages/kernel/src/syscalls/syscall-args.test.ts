import { describe, expect, it } from 'vitest';
import { PATH_MAX, argBytes, argFd, argInt, argPath, argUint } from './syscall-args.js';
import { errnoOf } from '../../test/errno-of.js';

describe('syscall argument validation', () => {
  describe('argFd', () => {
    it('accepts a non-negative integer', () => {
      expect(argFd(0)).toBe(0);
      expect(argFd(1023)).toBe(1023);
    });

    it.each([-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '3', null, undefined, 3n, {}])(
      'rejects %s with EBADF',
      (value) => {
        expect(errnoOf(() => argFd(value))).toBe('EBADF');
      },
    );
  });

  describe('argUint', () => {
    it('accepts non-negative safe integers', () => {
      expect(argUint(0, 'count')).toBe(0);
      expect(argUint(Number.MAX_SAFE_INTEGER, 'count')).toBe(Number.MAX_SAFE_INTEGER);
    });

    it.each([-1, 1.5, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY, '1', null, undefined, 1n])(
      'rejects %s with EINVAL',
      (value) => {
        expect(errnoOf(() => argUint(value, 'count'))).toBe('EINVAL');
      },
    );

    it('names the argument in the message', () => {
      expect(() => argUint(-1, 'whence')).toThrow(/whence/);
    });
  });

  describe('argInt', () => {
    it('accepts negative and positive safe integers', () => {
      expect(argInt(-5, 'offset')).toBe(-5);
      expect(argInt(Number.MIN_SAFE_INTEGER, 'offset')).toBe(Number.MIN_SAFE_INTEGER);
    });

    it.each([1.5, -(2 ** 53), 2 ** 53, Number.NaN, '-1', null, 1n])(
      'rejects %s with EINVAL',
      (value) => {
        expect(errnoOf(() => argInt(value, 'offset'))).toBe('EINVAL');
      },
    );
  });

  describe('argBytes', () => {
    it('accepts a Uint8Array (or Buffer) and returns it as is', () => {
      const bytes = new Uint8Array(4);
      expect(argBytes(bytes, 'buffer')).toBe(bytes);
      const buffer = Buffer.alloc(2);
      expect(argBytes(buffer, 'buffer')).toBe(buffer);
    });

    it.each([
      ['an ArrayBuffer', new ArrayBuffer(4)],
      ['a Uint16Array', new Uint16Array(2)],
      ['a DataView', new DataView(new ArrayBuffer(4))],
      ['an array of numbers', [1, 2, 3]],
      ['a string', 'abc'],
      ['null', null],
    ])('rejects %s with EFAULT', (_what, value) => {
      expect(errnoOf(() => argBytes(value, 'buffer'))).toBe('EFAULT');
    });
  });

  describe('argPath', () => {
    it('accepts a path of up to PATH_MAX - 1 bytes, leaving room for the NUL', () => {
      expect(PATH_MAX).toBe(4096);
      expect(argPath('/dev/null')).toBe('/dev/null');
      const longest = '/' + 'a'.repeat(4094);
      expect(argPath(longest)).toBe(longest);
    });

    it.each([42, null, undefined, new Uint8Array([47, 0])])(
      'rejects %s (not a string) with EFAULT',
      (value) => {
        expect(errnoOf(() => argPath(value))).toBe('EFAULT');
      },
    );

    it('rejects an empty path with ENOENT', () => {
      expect(errnoOf(() => argPath(''))).toBe('ENOENT');
    });

    it('rejects a path of PATH_MAX bytes or more with ENAMETOOLONG', () => {
      expect(errnoOf(() => argPath('/' + 'a'.repeat(4095)))).toBe('ENAMETOOLONG');
      expect(errnoOf(() => argPath('a'.repeat(10_000)))).toBe('ENAMETOOLONG');
    });

    it('measures the path in UTF-8 bytes, as the kernel copies it', () => {
      // "é" is two bytes in UTF-8: 2048 of them make 4096 bytes, no room for the NUL.
      expect(errnoOf(() => argPath('é'.repeat(2048)))).toBe('ENAMETOOLONG');
      expect(errnoOf(() => argPath('/' + '€'.repeat(1365)))).toBe('ENAMETOOLONG');
      const fits = 'é'.repeat(2047) + 'a';
      expect(argPath(fits)).toBe(fits);
    });
  });
});
