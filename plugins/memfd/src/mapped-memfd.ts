import {
  F_ADD_SEALS,
  MFD_ALLOW_SEALING,
  SEEK_END,
  mappingSlices,
  readMapping,
  writeMapping,
  type MemoryMapping,
  type Process,
} from '@liveupdate/machine';

/** Options of {@link MappedMemfd.create}. */
export interface MappedMemfdOptions {
  /** `F_SEAL_*` bits added after `ftruncate` and before `mmap` (the memfd allows sealing). */
  readonly seals?: number;
}

/**
 * Userspace's side of a memfd it has mapped: the fd, its size and the `mmap` of all of it, with
 * reads and writes by offset that cross the mapping's segments (a memfd's folios need not be
 * contiguous in RAM). What a cache or a VMM keeps in a memfd it reaches this way, with no syscall
 * per access and no copy but the caller's.
 *
 * @example
 * ```ts
 * const ram = await MappedMemfd.create(process, 'guest-ram', 4 << 20, {
 *   seals: F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL,
 * });
 * ram.write(0x1000, new TextEncoder().encode('hello'));
 * // After a live update, on the retrieved fd:
 * const again = await MappedMemfd.map(next, retrievedFd);
 * ```
 */
export class MappedMemfd {
  readonly process: Process;
  readonly fd: number;
  /** Bytes mapped: the file's size when it was mapped. */
  readonly size: number;
  readonly mapping: MemoryMapping;

  private constructor(process: Process, fd: number, size: number, mapping: MemoryMapping) {
    this.process = process;
    this.fd = fd;
    this.size = size;
    this.mapping = mapping;
  }

  /**
   * `memfd_create` (with `MFD_ALLOW_SEALING` when `seals` are asked for), `ftruncate` to `size`,
   * `F_ADD_SEALS`, then `mmap` of the whole file. Rejects with the failing syscall's errno.
   */
  static async create(
    process: Process,
    name: string,
    size: number,
    options: MappedMemfdOptions = {},
  ): Promise<MappedMemfd> {
    const seals = options.seals ?? 0;
    const fd = await process.memfdCreate(name, seals === 0 ? 0 : MFD_ALLOW_SEALING);
    await process.ftruncate(fd, size);
    if (seals !== 0) await process.fcntl(fd, F_ADD_SEALS, seals);
    return new MappedMemfd(process, fd, size, await process.mmap(fd, size));
  }

  /** `mmap` all of a memfd the process already has (e.g. one retrieved from a LUO session). */
  static async map(process: Process, fd: number): Promise<MappedMemfd> {
    const size = await process.lseek(fd, 0, SEEK_END);
    return new MappedMemfd(process, fd, size, await process.mmap(fd, size));
  }

  /** A copy of bytes `[offset, offset + length)`. `RangeError` outside the mapping. */
  read(offset: number, length: number): Uint8Array {
    return readMapping(this.mapping, offset, length);
  }

  /** Write `data` at `offset`. `RangeError` outside the mapping. */
  write(offset: number, data: Uint8Array): void {
    writeMapping(this.mapping, offset, data);
  }

  /** Live views of `[offset, offset + length)`, one per segment crossed (they are the frames). */
  slices(offset: number, length: number): Uint8Array[] {
    return mappingSlices(this.mapping, offset, length);
  }

  /**
   * A live little-endian view of `[offset, offset + length)`, which must lie in one segment
   * (`RangeError` otherwise): writes through it are writes to the file.
   */
  view(offset: number, length: number): DataView {
    const slices = this.slices(offset, length);
    if (slices.length !== 1) {
      throw new RangeError(`[${offset}, +${length}) crosses a segment boundary of the mapping`);
    }
    const [bytes] = slices as [Uint8Array];
    return new DataView(bytes.buffer, bytes.byteOffset, length);
  }

  /** `munmap`; the fd stays open. */
  async unmap(): Promise<void> {
    await this.process.munmap(this.mapping);
  }
}
