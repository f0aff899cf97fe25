import { describe, expect, test } from 'vitest';
import { FdtError, fdtNode, fdtValue } from './index.js';

function nodeError(make: () => unknown): FdtError {
  try {
    make();
  } catch (error) {
    if (error instanceof FdtError) return error;
    throw error;
  }
  throw new Error('did not throw');
}

describe('fdtNode', () => {
  test('keeps property order and children as given', () => {
    const child = fdtNode('child');
    const node = fdtNode('n@1', { b: fdtValue.u32(2), a: fdtValue.empty() }, [child]);
    expect(node).toEqual({
      name: 'n@1',
      properties: [
        { name: 'b', value: fdtValue.u32(2) },
        { name: 'a', value: new Uint8Array() },
      ],
      children: [child],
    });
  });

  test('builds a root with the empty name and nothing else by default', () => {
    expect(fdtNode('')).toEqual({ name: '', properties: [], children: [] });
  });

  test('refuses invalid node and property names as BAD_NAME', () => {
    expect(nodeError(() => fdtNode('a b')).code).toBe('BAD_NAME');
    expect(nodeError(() => fdtNode('n', { 'a@b': fdtValue.empty() })).code).toBe('BAD_NAME');
  });

  test('refuses a value that is not a Uint8Array as BAD_VALUE', () => {
    const bad = { p: 'text' as unknown as Uint8Array };
    expect(nodeError(() => fdtNode('n', bad)).code).toBe('BAD_VALUE');
  });

  test('refuses two children with the same name as DUPLICATE', () => {
    expect(nodeError(() => fdtNode('n', {}, [fdtNode('a'), fdtNode('a')])).code).toBe('DUPLICATE');
  });
});
