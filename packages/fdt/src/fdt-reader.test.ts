import { describe, expect, test } from 'vitest';
import {
  FdtError,
  decodeFdt,
  encodeFdt,
  fdtNode,
  fdtValue,
  findNode,
  getProperty,
  readString,
  readStringList,
  readU32,
  readU64,
} from './index.js';
import type { FdtErrorCode, FdtNode } from './index.js';
import { richTree } from '../test/sample-trees.js';

function readError(read: () => unknown): FdtError {
  try {
    read();
  } catch (error) {
    if (error instanceof FdtError) return error;
    throw error;
  }
  throw new Error('did not throw');
}

function expectReadError(read: () => unknown, code: FdtErrorCode, ...inMessage: string[]): void {
  const error = readError(read);
  expect(error.code, error.message).toBe(code);
  for (const text of inMessage) expect(error.message).toContain(text);
}

/** `/cpus/cpu@0` of a decoded tree, so the readers know its path. */
function decodedCpu(): FdtNode {
  const root = decodeFdt(encodeFdt(richTree())).root;
  const cpu = root.children.find((c) => c.name === 'cpus')?.children[0];
  if (cpu === undefined) throw new Error('no cpu');
  return cpu;
}

describe('property readers', () => {
  test('getProperty returns the value or undefined', () => {
    const node = fdtNode('n', { a: fdtValue.u32(1) });
    expect(getProperty(node, 'a')).toEqual(fdtValue.u32(1));
    expect(getProperty(node, 'b')).toBeUndefined();
  });

  test('read values of a decoded tree', () => {
    const root = decodeFdt(encodeFdt(richTree())).root;
    expect(readU32(root, '#address-cells')).toBe(2);
    expect(readStringList(root, 'compatible')).toEqual(['acme,board-v2', 'acme,board']);
    expect(readString(root, 'model')).toBe('Acme Board ünïcode');
    const memory = findNode(root, '/memory@80000000');
    expect(memory && getProperty(memory, 'reg')?.length).toBe(16);
  });

  test.each([
    ['readU32', (n: FdtNode) => readU32(n, 'missing')],
    ['readU64', (n: FdtNode) => readU64(n, 'missing')],
    ['readString', (n: FdtNode) => readString(n, 'missing')],
    ['readStringList', (n: FdtNode) => readStringList(n, 'missing')],
  ])('%s reports a missing property as NOT_FOUND with the node path', (_reader, read) => {
    expectReadError(() => read(decodedCpu()), 'NOT_FOUND', '/cpus/cpu@0', '"missing"');
  });

  test('readU32 reports a value that is not 4 bytes as BAD_PROPERTY with path and sizes', () => {
    const cpu = decodedCpu();
    cpu.properties.push({ name: 'short', value: new Uint8Array(3) });
    expectReadError(
      () => readU32(cpu, 'short'),
      'BAD_PROPERTY',
      '/cpus/cpu@0',
      '"short"',
      '3 bytes; a u32 needs 4',
    );
    cpu.properties.push({ name: 'wide', value: fdtValue.u64(1n) });
    expectReadError(() => readU32(cpu, 'wide'), 'BAD_PROPERTY', '8 bytes');
  });

  test('readU64 reports a value that is not 8 bytes as BAD_PROPERTY', () => {
    expectReadError(() => readU64(decodedCpu(), 'reg'), 'BAD_PROPERTY', '/cpus/cpu@0', 'needs 8');
  });

  test('readString reports empty, unterminated, multi-string and invalid UTF-8 values as BAD_PROPERTY', () => {
    const node = fdtNode('n', {
      empty: fdtValue.empty(),
      raw: new Uint8Array([0x61, 0x62]),
      two: fdtValue.stringList(['a', 'b']),
      latin1: new Uint8Array([0xe9, 0]),
    });
    expectReadError(() => readString(node, 'empty'), 'BAD_PROPERTY', 'empty');
    expectReadError(() => readString(node, 'raw'), 'BAD_PROPERTY', 'NUL-terminated');
    expectReadError(() => readString(node, 'two'), 'BAD_PROPERTY', '2 strings');
    expectReadError(() => readString(node, 'latin1'), 'BAD_PROPERTY', 'UTF-8');
  });

  test('readStringList reports an unterminated list as BAD_PROPERTY', () => {
    const node = fdtNode('n', { raw: new Uint8Array([0x61, 0, 0x62]) });
    expectReadError(() => readStringList(node, 'raw'), 'BAD_PROPERTY', 'NUL-terminated');
  });

  test('name the path of a node found with findNode in a hand-built tree', () => {
    const root = fdtNode('', {}, [fdtNode('a', {}, [fdtNode('b')])]);
    const b = findNode(root, '/a/b');
    if (b === undefined) throw new Error('no /a/b');
    expectReadError(() => readU32(b, 'x'), 'NOT_FOUND', 'node /a/b ');
  });

  test('name a hand-built node never looked up by its own name', () => {
    expectReadError(() => readU32(fdtNode('lonely@1'), 'x'), 'NOT_FOUND', 'node lonely@1 ');
  });

  test('put the node path on the error object', () => {
    expect(readError(() => readU32(decodedCpu(), 'nope')).path).toBe('/cpus/cpu@0');
  });
});
