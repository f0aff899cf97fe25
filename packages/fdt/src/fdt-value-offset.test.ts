import { describe, expect, test } from 'vitest';
import { decodeFdt, encodeFdt, fdtNode, fdtValue, fdtValueOffset } from './index.js';
import { richTree } from '../test/sample-trees.js';

describe('fdtValueOffset', () => {
  test('gives, for every decoded property, where its value lies in the blob', () => {
    const blob = encodeFdt(richTree());
    const { root } = decodeFdt(blob);
    const walk = (node: typeof root): number => {
      let seen = 0;
      for (const property of node.properties) {
        const offset = fdtValueOffset(property);
        expect(offset, property.name).toBeDefined();
        expect(blob.subarray(offset!, offset! + property.value.length)).toEqual(property.value);
        seen++;
      }
      return node.children.reduce((sum, child) => sum + walk(child), seen);
    };
    expect(walk(root)).toBeGreaterThan(3);
  });

  test('points at the bytes that hold the value: changing them changes what is decoded', () => {
    const blob = encodeFdt(
      fdtNode('', { a: fdtValue.u32(1) }, [fdtNode('n', { crc: fdtValue.u32(0x11223344) })]),
    );
    const crc = decodeFdt(blob).root.children[0]!.properties[0]!;
    const offset = fdtValueOffset(crc)!;
    blob.set([0xaa, 0xbb, 0xcc, 0xdd], offset);
    expect(decodeFdt(blob).root.children[0]!.properties[0]!.value).toEqual(
      Uint8Array.of(0xaa, 0xbb, 0xcc, 0xdd),
    );
    expect(decodeFdt(blob).root.properties[0]!.value).toEqual(fdtValue.u32(1));
  });

  test('is undefined for a property built by hand', () => {
    const node = fdtNode('', { a: fdtValue.u32(1) });
    expect(fdtValueOffset(node.properties[0]!)).toBeUndefined();
  });
});
