import { describe, expect, test } from 'vitest';
import { FdtError, fdtNode, findNode } from './index.js';

const root = fdtNode('', {}, [
  fdtNode('cpus', {}, [fdtNode('cpu@0'), fdtNode('cpu@1')]),
  fdtNode('memory@0'),
]);

describe('findNode', () => {
  test('returns the root for "/"', () => {
    expect(findNode(root, '/')).toBe(root);
  });

  test('walks nested names including unit addresses', () => {
    expect(findNode(root, '/cpus/cpu@1')).toBe(root.children[0]?.children[1]);
  });

  test('needs the unit address to match exactly', () => {
    expect(findNode(root, '/memory')).toBeUndefined();
    expect(findNode(root, '/memory@0')).toBe(root.children[1]);
  });

  test('returns undefined when a component is missing', () => {
    expect(findNode(root, '/cpus/cpu@2')).toBeUndefined();
    expect(findNode(root, '/nope/cpu@0')).toBeUndefined();
  });

  test('ignores empty components from doubled or trailing slashes', () => {
    expect(findNode(root, '//cpus/')).toBe(root.children[0]);
  });

  test('refuses a relative path as BAD_VALUE', () => {
    expect(() => findNode(root, 'cpus')).toThrow(FdtError);
    try {
      findNode(root, 'cpus');
    } catch (error) {
      expect((error as FdtError).code).toBe('BAD_VALUE');
    }
  });
});
