import { F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, type Process } from '@liveupdate/machine';
import { MappedMemfd } from '@liveupdate/plugin-memfd';

/**
 * The seals guest RAM gets before it is mapped into an IOAS: the iommufd live-update handler
 * refuses a mapping whose memfd could have grown or shrunk since it was mapped.
 */
export const GUEST_RAM_SEALS = F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL;

/**
 * Guest RAM: a sealed memfd and the VMM's mapping of it. Guest-physical address = offset in the
 * memfd = IOVA, since the VMM maps it at IOVA 0.
 */
export type GuestRam = MappedMemfd;

export const GuestRam = {
  /** `memfd_create`, `ftruncate`, seal ({@link GUEST_RAM_SEALS}), then `mmap`. */
  create(process: Process, size: number): Promise<GuestRam> {
    return MappedMemfd.create(process, 'guest-ram', size, { seals: GUEST_RAM_SEALS });
  },
  /** Map guest RAM retrieved from a LUO session (its fd in `process`): the same frames. */
  attach(process: Process, fd: number): Promise<GuestRam> {
    return MappedMemfd.map(process, fd);
  },
};
