import { describe, expect, it } from 'vitest';
import { KernelError, PhysicalMemory } from '@liveupdate/machine';
import type { KexecHandover } from '@liveupdate/kernel';
import { restoreSerializedFolio, serializedDataAddress } from './serialized-data.js';

const memory = PhysicalMemory.allocate(16 * 4096);

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    return KernelError.isInstance(error) ? error.message : 'other';
  }
  return undefined;
}

describe('serializedDataAddress', () => {
  it('gives a page-aligned address in RAM back as a number', () => {
    expect(serializedDataAddress(3n * 4096n, memory, 'x')).toBe(3 * 4096);
  });

  it.each([
    ['0 (no serialized data)', 0n, /x: no serialized data/],
    ['an unaligned address', 4097n, /not a page of RAM/],
    ['an address past RAM', 16n * 4096n, /not a page of RAM/],
  ])('refuses %s with EINVAL', (_what, data, message) => {
    expect(codeOf(() => serializedDataAddress(data, memory, 'x'))).toMatch(/^EINVAL/);
    expect(codeOf(() => serializedDataAddress(data, memory, 'x'))).toMatch(message);
  });
});

describe('restoreSerializedFolio', () => {
  it('restores through KHO with the order given and turns any failure into EINVAL naming the struct', () => {
    const calls: [number, number][] = [];
    const kho = {
      restoreFolio(phys: number, order: number) {
        calls.push([phys, order]);
        if (phys === 0x2000) throw new KernelError('EINVAL', 'kho: not preserved');
        return { pfn: phys / 4096, order };
      },
    } as unknown as KexecHandover;
    expect(restoreSerializedFolio(kho, 0x1000, 0, 'thing_ser')).toEqual({ pfn: 1, order: 0 });
    expect(codeOf(() => restoreSerializedFolio(kho, 0x2000, 1, 'thing_ser'))).toBe(
      'EINVAL: 0x2000 is not a preserved thing_ser',
    );
    expect(calls).toEqual([
      [0x1000, 0],
      [0x2000, 1],
    ]);
  });
});
