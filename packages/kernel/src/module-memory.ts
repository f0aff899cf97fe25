import { KernelError, PAGE_SIZE, PhysicalMemory, hex } from '@liveupdate/machine';
import type { FrameState, PageAllocator } from './page-allocator.js';

const WHY: Record<Exclude<FrameState, 'allocated'>, string> = {
  free: 'free memory',
  preserved:
    'preserved by the previous kernel and not restored (restore it through KHO before use)',
  firmware: 'firmware memory',
  scratch: "KHO's scratch area (the page allocator's memory map)",
  reserved: "the page allocator's memory map",
};

/**
 * Physical memory as a module sees it (`ModuleContext.memory`): the same RAM and methods as
 * {@link PhysicalMemory}, but every access must lie in frames this kernel owns — allocated by
 * its page allocator, or preserved by the previous kernel and restored through KHO. One
 * exception: the copying reads ({@link read}, {@link readU32}, {@link readU64}) may also read
 * handover data that is preserved and not restored yet, because a reader must check what it is
 * handed before it takes any of it (a damaged list is refused without being half-restored);
 * writing such a frame, or a live {@link view} of it, is refused. Any access that touches a
 * free frame, firmware memory or the memory map, and a write or view of a preserved frame
 * nobody restored, fails with `EFAULT` naming the module, the frame and what it is. The check
 * costs O(folios touched × orders), not O(RAM).
 *
 * The kernel itself (KHO, the drivers) keeps the unchecked {@link PhysicalMemory}: it reads the
 * handover before anything is restored. {@link buffer} is refused, so the shared RAM is not
 * handed out whole; a live view's `.buffer` still is the shared RAM (JavaScript cannot hide it),
 * which is why debug boots also poison every frame no kernel owns.
 */
export class ModuleMemory extends PhysicalMemory {
  readonly #pages: PageAllocator;
  readonly #module: string;
  /** Inside a copying read: preserved, not yet restored frames may be read. */
  #copying = false;

  constructor(memory: PhysicalMemory, pages: PageAllocator, module: string) {
    super(memory.buffer);
    this.#pages = pages;
    this.#module = module;
  }

  override get buffer(): never {
    throw new KernelError(
      'EPERM',
      `module ${this.#module}: the RAM buffer is not available to modules; use this memory's methods`,
    );
  }

  override read(phys: number, length: number): Uint8Array {
    return this.#copy(() => super.read(phys, length));
  }

  override readU32(phys: number): number {
    return this.#copy(() => super.readU32(phys));
  }

  override readU64(phys: number): bigint {
    return this.#copy(() => super.readU64(phys));
  }

  #copy<T>(read: () => T): T {
    this.#copying = true;
    try {
      return read();
    } finally {
      this.#copying = false;
    }
  }

  override check(phys: number, length: number): void {
    super.check(phys, length);
    if (length === 0) return;
    const first = Math.floor(phys / PAGE_SIZE);
    const frames = Math.floor((phys + length - 1) / PAGE_SIZE) - first + 1;
    if (this.#pages.isAllocatedRange(first, frames)) return;
    for (let pfn = first; pfn < first + frames; pfn++) {
      const state = this.#pages.frameState(pfn);
      if (state === 'allocated' || (state === 'preserved' && this.#copying)) continue;
      throw new KernelError(
        'EFAULT',
        `module ${this.#module}: access to ${hex(phys)}+${hex(length)} touches frame ${hex(pfn * PAGE_SIZE)}, which is ${WHY[state]}, not memory of this kernel`,
      );
    }
  }
}
