import {
  F_ADD_SEALS,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  MFD_ALLOW_SEALING,
  SEEK_END,
  mappingSlices,
  readMapping,
  writeMapping,
  type MemoryMapping,
  type Process,
} from '@liveupdate/machine';

/**
 * Guest RAM: a memfd sealed against growing and shrinking (before it is mapped, as the iommufd
 * live-update handler requires), and the VMM's mapping of it. Guest-physical address = offset in
 * the memfd = IOVA, since the VMM maps it at IOVA 0.
 */
export class GuestRam {
  readonly process: Process;
  readonly fd: number;
  readonly size: number;
  readonly mapping: MemoryMapping;

  private constructor(process: Process, fd: number, size: number, mapping: MemoryMapping) {
    this.process = process;
    this.fd = fd;
    this.size = size;
    this.mapping = mapping;
  }

  /** `memfd_create(MFD_ALLOW_SEALING)`, `ftruncate`, seal grow/shrink/seal, then `mmap`. */
  static async create(process: Process, size: number): Promise<GuestRam> {
    const fd = await process.memfdCreate('guest-ram', MFD_ALLOW_SEALING);
    await process.ftruncate(fd, size);
    await process.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
    return new GuestRam(process, fd, size, await process.mmap(fd, size));
  }

  /** Map guest RAM retrieved from a LUO session (its fd in `process`): the same frames. */
  static async attach(process: Process, fd: number): Promise<GuestRam> {
    const size = await process.lseek(fd, 0, SEEK_END);
    return new GuestRam(process, fd, size, await process.mmap(fd, size));
  }

  /** The bytes at guest-physical `gpa` (a copy). */
  read(gpa: number, length: number): Uint8Array {
    return readMapping(this.mapping, gpa, length);
  }

  /** Write `data` at guest-physical `gpa`. */
  write(gpa: number, data: Uint8Array): void {
    writeMapping(this.mapping, gpa, data);
  }

  /** A little-endian view of `[gpa, gpa + length)`, which must lie in one mapped segment. */
  view(gpa: number, length: number): DataView {
    const slices = mappingSlices(this.mapping, gpa, length);
    if (slices.length !== 1) {
      throw new RangeError(`guest-physical [${gpa}, +${length}) crosses a segment boundary`);
    }
    const [bytes] = slices as [Uint8Array];
    return new DataView(bytes.buffer, bytes.byteOffset, length);
  }
}
