import type { Machine } from '@liveupdate/machine';
import type { GuestNic } from './vm-guest-nic.js';

/** The NIC at one moment: its hardware counters and what waits in the guest's ring. */
export interface NicSample {
  /** Machine time, milliseconds since it was created. */
  readonly time: number;
  /** Packets delivered into the ring since the machine was created (`packets` counter). */
  readonly delivered: number;
  /** Packets dropped (`drops` counter). */
  readonly dropped: number;
  /** DMA transactions the IOMMU blocked (`faults` counter). */
  readonly faults: number;
  /** Packets delivered that the guest has not taken yet: the ring's occupancy. */
  readonly ringOccupancy: number;
}

/**
 * Samples the NIC every millisecond, for the trace's counter tracks: the machine's timeline holds
 * only what kernels record, and the NIC's counters are hardware, which no kernel traces. Runs on
 * the main thread beside the guest loop, and only with `--trace` or `--report`, so the default run
 * does not pay.
 */
export class NicSampler {
  readonly #samples: NicSample[] = [];
  readonly #timer: NodeJS.Timeout;

  /** Start sampling the NIC at `bdf`; `guest` gives the guest driving it now (it changes at each update). */
  constructor(machine: Machine, bdf: string, guest: () => GuestNic | undefined) {
    const sample = (): void => {
      const counters = machine.counters(bdf);
      const consumed = guest()?.state.consumed ?? counters.packets;
      this.#samples.push({
        time: machine.now(),
        delivered: counters.packets,
        dropped: counters.drops,
        faults: counters.faults,
        ringOccupancy: counters.packets - consumed,
      });
    };
    sample();
    this.#timer = setInterval(sample, 1);
  }

  /** Stop sampling; the samples, in time order. */
  stop(): readonly NicSample[] {
    clearInterval(this.#timer);
    return this.#samples;
  }
}
