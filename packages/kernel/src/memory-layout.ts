import { KernelError, PAGE_SIZE, type PhysicalMemory } from '@liveupdate/machine';
import type { CommandLine } from './command-line.js';
import type { FrameRange } from './kho/kho-incoming.js';

/** Bytes of `struct page` per frame in the memory map (flags, order). */
export const MEMMAP_BYTES_PER_FRAME = 2;
/** The first 1 MiB is firmware's, as on x86: never allocated, never preserved. */
export const FIRMWARE_BYTES = 1024 * 1024;

/** Where things are in RAM for this boot, decided before the page allocator exists. */
export interface MemoryLayout {
  /** Frames below this belong to firmware. */
  readonly firstUsablePfn: number;
  /** KHO's scratch area, or `null` when KHO is off. */
  readonly scratch: FrameRange | null;
  /** The memory map (`struct page` array), allocated early from scratch (memblock). */
  readonly memmap: FrameRange;
}

/**
 * Plan this boot's memory (the kernel's memblock stage). With KHO on, the scratch area is taken
 * from the handover (later kernels reuse the first kernel's area) or, on a cold boot, sized by
 * `kho_scratch=` (default: 1/64 of RAM, at least 4 MiB) right above the firmware area. Early
 * allocations — the memory map — come from scratch, which never holds preserved memory, so they
 * cannot overwrite what the previous kernel handed over.
 */
export function planMemoryLayout(
  memory: PhysicalMemory,
  cmdline: CommandLine,
  khoEnabled: boolean,
  incomingScratch: FrameRange | null,
): MemoryLayout {
  const firstUsablePfn = FIRMWARE_BYTES / PAGE_SIZE;
  const memmapFrames = Math.ceil((memory.frames * MEMMAP_BYTES_PER_FRAME) / PAGE_SIZE);
  let scratch: FrameRange | null = null;
  if (khoEnabled) {
    if (incomingScratch) {
      scratch = incomingScratch;
    } else {
      const requested = cmdline.size('kho_scratch') ?? Math.max(4 * 1024 * 1024, memory.size / 64);
      const frames = Math.ceil(requested / PAGE_SIZE);
      scratch = { pfn: firstUsablePfn, frames };
    }
    if (scratch.frames < memmapFrames) {
      throw new KernelError(
        'ENOMEM',
        `kho: scratch area of ${scratch.frames} frames cannot hold the ${memmapFrames}-frame memory map; raise kho_scratch=`,
      );
    }
  }
  const memmap = { pfn: scratch ? scratch.pfn : firstUsablePfn, frames: memmapFrames };
  const end = Math.max(memmap.pfn + memmap.frames, scratch ? scratch.pfn + scratch.frames : 0);
  if (end >= memory.frames) {
    throw new KernelError('ENOMEM', `RAM of ${memory.frames} frames is too small for this kernel`);
  }
  return { firstUsablePfn, scratch, memmap };
}
