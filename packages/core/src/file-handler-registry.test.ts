import { describe, expect, it } from 'vitest';
import { KernelError } from '@liveupdate/machine';
import { defineHandler, type FileHandler } from './file-handler.js';
import { FileHandlerRegistry } from './file-handler-registry.js';

const handler = (compatible: string, extra: Partial<FileHandler> = {}): FileHandler =>
  defineHandler({
    compatible,
    canPreserve: () => false,
    preserve: () => undefined,
    unpreserve: () => undefined,
    retrieve: () => undefined,
    finish: () => undefined,
    ...extra,
  });

function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    if (KernelError.isInstance(error)) return error.code;
    throw error;
  }
  return undefined;
}

describe('FileHandlerRegistry', () => {
  it('keeps handlers in registration order and finds them by exact compatible', () => {
    const registry = new FileHandlerRegistry();
    const a = handler('a-v1');
    const b = handler('b-v1');
    registry.register(a);
    registry.register(b);
    expect(registry.handlers).toEqual([a, b]);
    expect(registry.byCompatible('b-v1')).toBe(b);
    expect(registry.byCompatible('b-v')).toBeUndefined();
    expect(registry.byCompatible('B-V1')).toBeUndefined();
  });

  it('refuses a duplicate compatible with EEXIST', () => {
    const registry = new FileHandlerRegistry();
    registry.register(handler('a-v1'));
    expect(errnoOf(() => registry.register(handler('a-v1')))).toBe('EEXIST');
  });

  it.each([
    ['an empty compatible', ''],
    ['a 48-byte compatible', 'x'.repeat(48)],
    ['a 47-byte compatible of multi-byte characters over 47 bytes', 'é'.repeat(24)],
    ['a NUL inside', 'a\0b'],
  ])('refuses %s with EINVAL', (_what, compatible) => {
    expect(errnoOf(() => new FileHandlerRegistry().register(handler(compatible)))).toBe('EINVAL');
  });

  it('accepts a 47-byte compatible', () => {
    const registry = new FileHandlerRegistry();
    registry.register(handler('x'.repeat(47)));
    expect(registry.handlers).toHaveLength(1);
  });

  it.each(['canPreserve', 'preserve', 'unpreserve', 'retrieve', 'finish'] as const)(
    'refuses a handler without %s with EINVAL, naming the op',
    (op) => {
      const broken = { ...handler('a-v1'), [op]: undefined } as unknown as FileHandler;
      let message = '';
      try {
        new FileHandlerRegistry().register(broken);
      } catch (error) {
        expect(KernelError.isInstance(error) && error.code).toBe('EINVAL');
        message = (error as Error).message;
      }
      expect(message).toContain(`${op}()`);
    },
  );

  it('refuses an optional op that is not a function with EINVAL', () => {
    const broken = handler('a-v1', { freeze: 'yes' as unknown as FileHandler['freeze'] });
    expect(errnoOf(() => new FileHandlerRegistry().register(broken))).toBe('EINVAL');
  });

  it('unregisters, and reports ENOENT for a handler it does not have', () => {
    const registry = new FileHandlerRegistry();
    const a = handler('a-v1');
    registry.register(a);
    registry.unregister(a);
    expect(registry.handlers).toEqual([]);
    expect(errnoOf(() => registry.unregister(a))).toBe('ENOENT');
  });
});

describe('FileHandlerRegistry formats (reads, writes)', () => {
  const freeze = () => undefined;

  it('finds a handler by any format it reads, and by nothing else', () => {
    const registry = new FileHandlerRegistry();
    const v3 = handler('x-v3', { reads: ['x-v3', 'x-v2'], writes: ['x-v3', 'x-v2'], freeze });
    registry.register(v3);
    expect(registry.byCompatible('x-v3')).toBe(v3);
    expect(registry.byCompatible('x-v2')).toBe(v3);
    expect(registry.byCompatible('x-v1')).toBeUndefined();
    expect(registry.reads()).toEqual(['x-v3', 'x-v2']);
  });

  it('refuses a second handler that reads a format another reads (EEXIST)', () => {
    const registry = new FileHandlerRegistry();
    registry.register(handler('x-v3', { reads: ['x-v3', 'x-v2'] }));
    expect(errnoOf(() => registry.register(handler('x-v2')))).toBe('EEXIST');
    expect(errnoOf(() => registry.register(handler('y-v1', { reads: ['y-v1', 'x-v3'] })))).toBe(
      'EEXIST',
    );
    expect(registry.handlers).toHaveLength(1);
  });

  it.each([
    ['reads without its compatible', { reads: ['x-v1'] }],
    ['empty reads', { reads: [] }],
    ['a format listed twice', { reads: ['x-v2', 'x-v2'] }],
    ['a format with NUL', { reads: ['x-v2', 'x\0'] }],
    ['a format of 48 bytes', { reads: ['x-v2', 'y'.repeat(48)] }],
    ['writes not led by its compatible', { writes: ['x-v1', 'x-v2'], freeze }],
    ['two writes and no freeze', { writes: ['x-v2', 'x-v1'] }],
    ['reads that is not an array', { reads: 'x-v2' as unknown as string[] }],
  ])('refuses a handler with %s (EINVAL)', (_what, extra) => {
    const registry = new FileHandlerRegistry();
    expect(errnoOf(() => registry.register(handler('x-v2', extra)))).toBe('EINVAL');
    expect(registry.handlers).toHaveLength(0);
  });
});
