import 'reflect-metadata';
import { describe, expect, it } from 'vitest';
import { KernelError, PAGE_SIZE, PhysicalMemory } from '@liveupdate/machine';
import { ModuleMemory } from './module-memory.js';
import { bootMemory } from '../test/memory-boot.js';

const RAM = 16 * 1024 * 1024;
const CMDLINE = 'kho=on page_poison=on';

/** A kernel that preserved two folios, kexec'd in-process: the next kernel and its module's memory. */
function nextKernel() {
  const k1 = bootMemory(PhysicalMemory.allocate(RAM), CMDLINE);
  const mine = k1.pages.allocPages(0);
  const theirs = k1.pages.allocPages(1);
  k1.memory.fill(mine.pfn * PAGE_SIZE, PAGE_SIZE, 0x11);
  k1.memory.fill(theirs.pfn * PAGE_SIZE, 2 * PAGE_SIZE, 0x22);
  k1.kho.preserveFolio(mine);
  k1.kho.preserveFolio(theirs);
  const k2 = bootMemory(k1.memory, CMDLINE, k1.kho.finalize());
  return { k2, mine, theirs, memory: new ModuleMemory(k2.memory, k2.pages, 'probe') };
}

function failure(access: () => unknown): KernelError {
  try {
    access();
  } catch (error) {
    if (KernelError.isInstance(error)) return error;
    throw error;
  }
  throw new Error('expected the access to fail');
}

describe('ModuleMemory', () => {
  it('reads and writes frames this kernel allocated, through every accessor', () => {
    const { k2, memory } = nextKernel();
    const folio = k2.pages.allocPages(1);
    const phys = folio.pfn * PAGE_SIZE;
    memory.writeU64(phys + PAGE_SIZE - 4, 0x0102030405060708n);
    expect(memory.readU64(phys + PAGE_SIZE - 4)).toBe(0x0102030405060708n);
    memory.write(phys, new Uint8Array([7, 8]));
    expect([...memory.read(phys, 2)]).toEqual([7, 8]);
    expect(memory.frame(folio.pfn + 1)[0]).toBe(k2.memory.read(phys + PAGE_SIZE, 1)[0]);
  });

  it('lets a preserved frame be copied out but not viewed or written until it is restored', () => {
    const { k2, theirs, memory } = nextKernel();
    const phys = theirs.pfn * PAGE_SIZE;
    // A reader checks handover data before it restores any of it: copying reads are allowed.
    expect(memory.read(phys + PAGE_SIZE, 4)).toEqual(new Uint8Array(4).fill(0x22));
    expect(memory.readU32(phys + PAGE_SIZE)).toBe(0x22222222);
    const error = failure(() => memory.view(phys, 16));
    expect(error.code).toBe('EFAULT');
    expect(error.message).toBe(
      `EFAULT: module probe: access to 0x${phys.toString(16)}+0x10 touches frame 0x${phys.toString(16)}, which is preserved by the previous kernel and not restored (restore it through KHO before use), not memory of this kernel`,
    );
    expect(errorOf(() => memory.writeU32(phys + PAGE_SIZE, 1))).toBe('EFAULT');
    k2.kho.restoreFolio(phys, 1);
    memory.writeU32(phys + PAGE_SIZE, 1);
    expect(memory.view(phys + PAGE_SIZE, 4)).toEqual(new Uint8Array([1, 0, 0, 0]));
  });

  it('refuses free frames, firmware and the memory map, naming what they are', () => {
    const { k2, memory } = nextKernel();
    const free = k2.pages.allocPages(0);
    k2.pages.freePages(free);
    expect(failure(() => memory.readU32(free.pfn * PAGE_SIZE)).message).toMatch(
      /which is free memory, not memory of this kernel$/,
    );
    expect(failure(() => memory.read(0x1000, 8)).message).toMatch(/which is firmware memory/);
    expect(failure(() => memory.fill(k2.layout.memmap.pfn * PAGE_SIZE, 1, 0)).message).toMatch(
      /KHO's scratch area \(the page allocator's memory map\)/,
    );
  });

  it('refuses a range that starts in an owned frame and runs into a free one', () => {
    const { k2, memory } = nextKernel();
    let owned = k2.pages.allocPages(0);
    while (k2.pages.frameState(owned.pfn + 1) !== 'free') owned = k2.pages.allocPages(0);
    const next = owned.pfn + 1;
    const error = failure(() => memory.read(owned.pfn * PAGE_SIZE + PAGE_SIZE - 2, 4));
    expect(error.message).toMatch(
      new RegExp(`touches frame 0x${(next * PAGE_SIZE).toString(16)}, which is free memory`),
    );
  });

  it('does not give out the RAM buffer', () => {
    const { memory } = nextKernel();
    expect(errorOf(() => memory.buffer)).toBe('EPERM');
  });
});

function errorOf(access: () => unknown): string {
  return failure(access).code;
}
