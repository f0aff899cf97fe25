import { describe, expect, it } from 'vitest';
import { PAGE_SIZE, PhysicalMemory } from '@liveupdate/machine';
import { CommandLine } from './command-line.js';
import { planMemoryLayout } from './memory-layout.js';
import { errnoOf } from '../test/errno-of.js';

const MiB = 1024 * 1024;

describe('planMemoryLayout', () => {
  it('puts the memory map right above the 1 MiB firmware area when KHO is off', () => {
    const memory = PhysicalMemory.allocate(16 * MiB);
    const layout = planMemoryLayout(memory, new CommandLine(''), false, null);
    // 1 MiB / 4 KiB = 256 firmware frames; 4096 frames × 2 bytes = 8 KiB = 2 frames of memory map.
    expect(layout).toEqual({ firstUsablePfn: 256, scratch: null, memmap: { pfn: 256, frames: 2 } });
  });

  it('sizes scratch at 4 MiB on small RAM and puts the memory map at its start', () => {
    const memory = PhysicalMemory.allocate(16 * MiB);
    const layout = planMemoryLayout(memory, new CommandLine('kho=on'), true, null);
    // 16 MiB / 64 = 256 KiB is below the 4 MiB floor: 1024 frames.
    expect(layout.scratch).toEqual({ pfn: 256, frames: 1024 });
    expect(layout.memmap).toEqual({ pfn: 256, frames: 2 });
  });

  it('sizes scratch at 1/64 of RAM when that exceeds 4 MiB', () => {
    const memory = PhysicalMemory.allocate(512 * MiB);
    const layout = planMemoryLayout(memory, new CommandLine('kho=on'), true, null);
    // 512 MiB / 64 = 8 MiB = 2048 frames; 131072 frames × 2 bytes = 256 KiB = 64 frames of memory map.
    expect(layout.scratch).toEqual({ pfn: 256, frames: 2048 });
    expect(layout.memmap).toEqual({ pfn: 256, frames: 64 });
  });

  it('takes the scratch size from kho_scratch= and rounds it up to whole frames', () => {
    const memory = PhysicalMemory.allocate(16 * MiB);
    const layout = planMemoryLayout(memory, new CommandLine('kho_scratch=10000'), true, null);
    expect(layout.scratch).toEqual({ pfn: 256, frames: Math.ceil(10000 / PAGE_SIZE) });
  });

  it('reuses the incoming scratch area on a KHO boot, whatever kho_scratch= says', () => {
    const memory = PhysicalMemory.allocate(16 * MiB);
    const incoming = { pfn: 2048, frames: 512 };
    const layout = planMemoryLayout(memory, new CommandLine('kho_scratch=8M'), true, incoming);
    expect(layout.scratch).toEqual(incoming);
    expect(layout.memmap.pfn).toBe(2048);
  });

  it('fails with ENOMEM when scratch cannot hold the memory map', () => {
    const memory = PhysicalMemory.allocate(16 * MiB);
    // The memory map needs 2 frames; one frame of scratch is too small.
    expect(
      errnoOf(() => planMemoryLayout(memory, new CommandLine('kho_scratch=4K'), true, null)),
    ).toBe('ENOMEM');
    expect(
      errnoOf(() => planMemoryLayout(memory, new CommandLine('kho_scratch=8K'), true, null)),
    ).toBeUndefined();
  });

  it('fails with ENOMEM when RAM ends inside the firmware area, memory map or scratch', () => {
    expect(
      errnoOf(() =>
        planMemoryLayout(PhysicalMemory.allocate(4 * MiB), new CommandLine(''), true, null),
      ),
    ).toBe('ENOMEM');
    expect(
      errnoOf(() =>
        planMemoryLayout(PhysicalMemory.allocate(MiB), new CommandLine(''), false, null),
      ),
    ).toBe('ENOMEM');
  });

  it('uses the default scratch size when kho_scratch= is malformed', () => {
    const memory = PhysicalMemory.allocate(16 * MiB);
    const layout = planMemoryLayout(memory, new CommandLine('kho_scratch=big'), true, null);
    // 1/64 of 16 MiB is below the 4 MiB floor.
    expect(layout.scratch!.frames).toBe((4 * MiB) / 4096);
  });
});
