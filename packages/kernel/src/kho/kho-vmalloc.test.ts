import 'reflect-metadata';
import { describe, expect, it } from 'vitest';
import { KernelError, PAGE_SIZE, PhysicalMemory } from '@liveupdate/machine';
import { MAX_PAGE_ORDER } from '../page-allocator.js';
import { bootMemory, type MemoryBoot } from '../../test/memory-boot.js';
import {
  KHO_VMALLOC_ALLOC,
  KHO_VMALLOC_CHUNK_ENTRIES,
  KHO_VMALLOC_HUGE_VMAP,
  khoPreserveVmalloc,
  khoReadVmalloc,
  khoRestoreVmalloc,
  khoUnpreserveVmalloc,
  type KhoVmalloc,
} from './kho-vmalloc.js';
import { errnoOf } from '../../test/errno-of.js';

const RAM = 16 * 1024 * 1024;

type Kernel = MemoryBoot;

/** The memory side of a kernel, in-process; from `fdtPhys` when it came by a KHO kexec. */
function bootKernel(memory: PhysicalMemory, fdtPhys: number | null = null): Kernel {
  return bootMemory(memory, 'kho=on page_poison=on', fdtPhys);
}

function kexec(k: Kernel): Kernel {
  const fdtPhys = k.kho.finalize();
  if (fdtPhys === null) throw new Error('KHO is on: finalize must write a handover');
  return bootKernel(k.memory, fdtPhys);
}

/** Byte equality without vitest's element-by-element diff, which is slow on megabytes. */
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean =>
  Buffer.from(a.buffer, a.byteOffset, a.length).equals(
    Buffer.from(b.buffer, b.byteOffset, b.length),
  );

const pattern = (length: number, seed = 1): Uint8Array =>
  Uint8Array.from({ length }, (_, i) => (i * 13 + seed + (i >>> 12)) & 0xff);

describe('kho-vmalloc', () => {
  it('brings a byte array longer than one chunk back across a kexec, and frees every page', () => {
    const k1 = bootKernel(PhysicalMemory.allocate(RAM));
    // More runs than one chunk lists, and a partial last page.
    const data = pattern((KHO_VMALLOC_CHUNK_ENTRIES + 10) * PAGE_SIZE - 100);
    const area = khoPreserveVmalloc(k1, data);
    expect(area).toMatchObject({
      totalPages: KHO_VMALLOC_CHUNK_ENTRIES + 10,
      flags: KHO_VMALLOC_ALLOC,
      order: 0,
    });
    // Runs plus two chunk pages, all preserved.
    expect(k1.kho.stats.preservedFolios).toBe(KHO_VMALLOC_CHUNK_ENTRIES + 10 + 2);

    const k2 = kexec(k1);
    const restored = khoRestoreVmalloc(k2, area);
    expect(restored.length).toBe(area.totalPages * PAGE_SIZE);
    expect(sameBytes(restored.subarray(0, data.length), data)).toBe(true);
    expect(restored.subarray(data.length).every((b) => b === 0)).toBe(true);
    expect(k2.kho.stats.unrestoredFolios).toBe(0);
    expect(k2.pages.stats.allocated).toBe(0);
  });

  it('lays out struct kho_vmalloc_chunk as documented: next at 0, a zero-terminated phys[] from 8', () => {
    const k = bootKernel(PhysicalMemory.allocate(RAM));
    const area = khoPreserveVmalloc(k, pattern(3 * PAGE_SIZE));
    const entry = (i: number): number => Number(k.memory.readU64(area.first + 8 + i * 8));
    expect(k.memory.readU64(area.first)).toBe(0n);
    for (let i = 0; i < 3; i++) {
      expect(entry(i) % PAGE_SIZE).toBe(0);
      expect(k.memory.read(entry(i), PAGE_SIZE)).toEqual(
        pattern(3 * PAGE_SIZE).subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE),
      );
    }
    expect(entry(3)).toBe(0);
  });

  it('uses runs of the given order and marks them as a huge mapping', () => {
    const k1 = bootKernel(PhysicalMemory.allocate(RAM));
    const data = pattern(5 * PAGE_SIZE, 7);
    const area = khoPreserveVmalloc(k1, data, 2);
    expect(area).toMatchObject({
      totalPages: 8,
      flags: KHO_VMALLOC_ALLOC | KHO_VMALLOC_HUGE_VMAP,
      order: 2,
    });
    const k2 = kexec(k1);
    expect(khoRestoreVmalloc(k2, area).subarray(0, data.length)).toEqual(data);
  });

  it('unpreserve gives back every page it took and preserves nothing any more', () => {
    const k = bootKernel(PhysicalMemory.allocate(RAM));
    const before = { pages: k.pages.stats, kho: k.kho.stats };
    const area = khoPreserveVmalloc(k, pattern(600 * PAGE_SIZE), 1);
    expect(k.pages.stats.allocated).toBeGreaterThan(0);
    khoUnpreserveVmalloc(k, area);
    expect({ pages: k.pages.stats, kho: k.kho.stats }).toEqual(before);
  });

  it('refuses empty data and bad orders with EINVAL', () => {
    const k = bootKernel(PhysicalMemory.allocate(RAM));
    expect(errnoOf(() => khoPreserveVmalloc(k, new Uint8Array(0)))).toBe('EINVAL');
    expect(errnoOf(() => khoPreserveVmalloc(k, pattern(10), MAX_PAGE_ORDER + 1))).toBe('EINVAL');
    expect(k.kho.stats.preservedFolios).toBe(0);
  });

  it('fails with ENOMEM and leaves nothing allocated or preserved when memory runs out', () => {
    const k = bootKernel(PhysicalMemory.allocate(RAM));
    const hold = [];
    while (k.pages.stats.free > 4) hold.push(k.pages.allocPages(0));
    const before = { pages: k.pages.stats, kho: k.kho.stats };
    expect(errnoOf(() => khoPreserveVmalloc(k, pattern(8 * PAGE_SIZE)))).toBe('ENOMEM');
    expect({ pages: k.pages.stats, kho: k.kho.stats }).toEqual(before);
  });

  it('restores an area only once', () => {
    const k1 = bootKernel(PhysicalMemory.allocate(RAM));
    const area = khoPreserveVmalloc(k1, pattern(PAGE_SIZE));
    const k2 = kexec(k1);
    khoRestoreVmalloc(k2, area);
    expect(errnoOf(() => khoRestoreVmalloc(k2, area))).toBe('EINVAL');
  });

  it('reads an area without restoring it, naming the chunk and the runs it would take', () => {
    const k1 = bootKernel(PhysicalMemory.allocate(RAM));
    const data = pattern(2 * PAGE_SIZE + 5);
    const area = khoPreserveVmalloc(k1, data);
    const k2 = kexec(k1);
    const before = k2.kho.stats;
    const read = khoReadVmalloc(k2, area);
    expect(sameBytes(read.data.subarray(0, data.length), data)).toBe(true);
    expect(read.folios.map((f) => f.order)).toEqual([0, 0, 0, 0]);
    expect(read.folios[0]!.pfn * PAGE_SIZE).toBe(area.first);
    expect(k2.kho.stats).toEqual(before);
    khoRestoreVmalloc(k2, area);
    expect(k2.kho.stats.unrestoredFolios).toBe(before.unrestoredFolios - 4);
  });

  it('refuses a run listed twice with EINVAL, restoring nothing', () => {
    const k1 = bootKernel(PhysicalMemory.allocate(RAM));
    const area = khoPreserveVmalloc(k1, pattern(3 * PAGE_SIZE));
    const k2 = kexec(k1);
    k2.memory.writeU64(area.first + 16, k2.memory.readU64(area.first + 8));
    const before = k2.kho.stats;
    expect(() => khoRestoreVmalloc(k2, area)).toThrow(/run 0x[0-9a-f]+ is listed twice/);
    expect(k2.kho.stats).toEqual(before);
  });

  describe('refuses a corrupt description with EINVAL, restoring nothing', () => {
    const corrupt: [string, (area: KhoVmalloc, memory: PhysicalMemory) => KhoVmalloc][] = [
      ['unknown flags', (a) => ({ ...a, flags: a.flags | 0x4 })],
      ['an order above the largest', (a) => ({ ...a, order: MAX_PAGE_ORDER + 1 })],
      ['a different order', (a) => ({ ...a, order: 1, totalPages: 4 })],
      ['too few total_pages', (a) => ({ ...a, totalPages: 2 })],
      ['too many total_pages', (a) => ({ ...a, totalPages: 4 })],
      ['zero total_pages', (a) => ({ ...a, totalPages: 0 })],
      ['no first chunk', (a) => ({ ...a, first: 0 })],
      ['a first chunk that was never preserved', (a) => ({ ...a, first: a.first + PAGE_SIZE })],
      ['a misaligned first chunk', (a) => ({ ...a, first: a.first + 8 })],
      [
        'a chunk that links to itself',
        (a, memory) => {
          memory.writeU64(a.first, BigInt(a.first));
          return a;
        },
      ],
      [
        'a run outside RAM',
        (a, memory) => {
          memory.writeU64(a.first + 8, BigInt(memory.size + PAGE_SIZE));
          return a;
        },
      ],
      [
        'a run that was never preserved',
        (a, memory) => {
          memory.writeU64(a.first + 8, memory.readU64(a.first + 8) + BigInt(PAGE_SIZE * 64));
          return a;
        },
      ],
    ];
    it.each(corrupt)('%s', (_what, change) => {
      const k1 = bootKernel(PhysicalMemory.allocate(RAM));
      const area = khoPreserveVmalloc(k1, pattern(3 * PAGE_SIZE));
      const k2 = kexec(k1);
      const bad = change(area, k2.memory);
      let error: unknown;
      try {
        khoRestoreVmalloc(k2, bad);
      } catch (e) {
        error = e;
      }
      expect(KernelError.isInstance(error) && error.code).toBe('EINVAL');
      expect(k2.pages.stats.allocated).toBe(0);
    });
  });
});
