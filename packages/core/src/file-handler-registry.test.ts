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
