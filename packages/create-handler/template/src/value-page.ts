import type { Folio, PageAllocator } from '@liveupdate/kernel';
import { KernelError, PAGE_SIZE, type PhysicalMemory } from '@liveupdate/machine';

/** The most bytes a value holds: its one page. */
export const VALUE_MAX = PAGE_SIZE;

/**
 * The object behind an open `/dev/__NAME__` file: a value of up to {@link VALUE_MAX} bytes that
 * lives only in a kernel page of its own (bytes past `length` are zero), so that a handler can
 * preserve the page in place.
 */
export class ValuePage {
  readonly #memory: PhysicalMemory;
  readonly #pages: PageAllocator;
  readonly folio: Folio;
  /** Bytes of the value. */
  length: number;

  constructor(memory: PhysicalMemory, pages: PageAllocator, folio: Folio, length: number) {
    this.#memory = memory;
    this.#pages = pages;
    this.folio = folio;
    this.length = length;
  }

  /** A new, empty value in a zeroed page. */
  static allocate(memory: PhysicalMemory, pages: PageAllocator): ValuePage {
    return new ValuePage(memory, pages, pages.allocPages(0, { zero: true }), 0);
  }

  /** The physical address of the page. */
  get phys(): number {
    return this.folio.pfn * PAGE_SIZE;
  }

  /** Up to `count` bytes from `offset`; none at or past the end of the value. */
  read(count: number, offset: number): Uint8Array {
    if (offset >= this.length) return new Uint8Array(0);
    return this.#memory.read(this.phys + offset, Math.min(count, this.length - offset));
  }

  /** Write `data` at `offset`, all or nothing: `ENOSPC` past the page. */
  write(data: Uint8Array, offset: number): number {
    if (offset + data.length > VALUE_MAX) {
      throw new KernelError(
        'ENOSPC',
        `/dev/__NAME__: ${data.length} bytes at ${offset} do not fit in ${VALUE_MAX}`,
      );
    }
    this.#memory.write(this.phys + offset, data);
    this.length = Math.max(this.length, offset + data.length);
    return data.length;
  }

  /** Give the page back; the value is gone. */
  free(): void {
    this.#pages.freePages(this.folio);
  }
}
