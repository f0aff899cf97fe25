import { describe, expect, it } from 'vitest';
import { KernelError } from './kernel-error.js';
import { PAGE_SIZE, PhysicalMemory, physToPfn, pfnToPhys } from './physical-memory.js';

describe('PhysicalMemory', () => {
  it('rounds its size up to whole 4 KiB frames', () => {
    const memory = PhysicalMemory.allocate(3 * PAGE_SIZE + 1);
    expect(memory.size).toBe(4 * PAGE_SIZE);
    expect(memory.frames).toBe(4);
    expect(() => PhysicalMemory.allocate(0)).toThrow(RangeError);
    expect(() => new PhysicalMemory(new SharedArrayBuffer(100))).toThrow(RangeError);
  });

  it('reads back what was written, at any physical address', () => {
    const memory = PhysicalMemory.allocate(4 * PAGE_SIZE);
    memory.write(PAGE_SIZE - 2, new Uint8Array([1, 2, 3, 4]));
    expect([...memory.read(PAGE_SIZE - 2, 4)]).toEqual([1, 2, 3, 4]);
    expect([...memory.frame(1).subarray(0, 2)]).toEqual([3, 4]);
  });

  it('stores u32 and u64 little-endian, the ABI byte order', () => {
    const memory = PhysicalMemory.allocate(PAGE_SIZE);
    memory.writeU32(0, 0x11223344);
    memory.writeU64(8, 0x0102030405060708n);
    expect([...memory.read(0, 4)]).toEqual([0x44, 0x33, 0x22, 0x11]);
    expect([...memory.read(8, 8)]).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    expect(memory.readU32(0)).toBe(0x11223344);
    expect(memory.readU64(8)).toBe(0x0102030405060708n);
  });

  it('gives live views: writes through a view are writes to RAM shared with other wrappers', () => {
    const memory = PhysicalMemory.allocate(2 * PAGE_SIZE);
    const other = new PhysicalMemory(memory.buffer);
    memory.view(PAGE_SIZE, 8).fill(7);
    expect(other.read(PAGE_SIZE, 8).every((b) => b === 7)).toBe(true);
    const copy = memory.read(PAGE_SIZE, 8);
    copy.fill(0);
    expect(memory.readU32(PAGE_SIZE)).toBe(0x07070707);
  });

  it('fills exactly the bytes asked for, at any alignment and length, with the value modulo 256', () => {
    const memory = PhysicalMemory.allocate(2 * PAGE_SIZE);
    const reference = new Uint8Array(2 * PAGE_SIZE);
    const cases: [number, number, number][] = [
      [3, 200, 0x1ab], // unaligned start and end, words between
      [PAGE_SIZE - 5, 70, -1], // across a frame boundary
      [16, 64, 7], // aligned on both ends
      [9, 60, 0x55], // too short for words: bytes only
      [1, 6, 9],
      [0, 2 * PAGE_SIZE - 1, 0xaa], // nearly all of RAM, to its last byte but one
      [2 * PAGE_SIZE - 3, 3, 1],
      [40, 0, 2],
    ];
    for (const [phys, length, value] of cases) {
      memory.fill(phys, length, value);
      reference.fill(value, phys, phys + length);
      expect(memory.read(0, 2 * PAGE_SIZE)).toEqual(reference);
    }
  });

  it('refuses every access outside RAM with EFAULT instead of reading garbage', () => {
    const memory = PhysicalMemory.allocate(2 * PAGE_SIZE);
    const efault = (fn: () => unknown) => {
      try {
        fn();
      } catch (error) {
        return KernelError.isInstance(error) ? error.code : 'other';
      }
      return 'no error';
    };
    expect(efault(() => memory.read(2 * PAGE_SIZE - 1, 2))).toBe('EFAULT');
    expect(efault(() => memory.write(-1, new Uint8Array(1)))).toBe('EFAULT');
    expect(efault(() => memory.readU64(2 * PAGE_SIZE - 4))).toBe('EFAULT');
    expect(efault(() => memory.view(0.5, 1))).toBe('EFAULT');
    expect(efault(() => memory.fill(0, 3 * PAGE_SIZE, 0))).toBe('EFAULT');
    expect(efault(() => memory.frame(2))).toBe('EFAULT');
    expect(memory.contains(0, 2 * PAGE_SIZE)).toBe(true);
    expect(memory.contains(1, 2 * PAGE_SIZE)).toBe(false);
  });

  it('converts between pfns and physical addresses', () => {
    expect(pfnToPhys(3)).toBe(3 * 4096);
    expect(physToPfn(3 * 4096 + 4095)).toBe(3);
  });
});
