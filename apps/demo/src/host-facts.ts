import { availableParallelism, platform, arch, totalmem } from 'node:os';

/** What the demo ran on: blackout figures mean little without it. */
export interface HostFacts {
  /** `process.version`, e.g. `"v20.20.2"`. */
  readonly node: string;
  /** CPUs Node may use (`os.availableParallelism()`). */
  readonly cores: number;
  /** `os.platform()`, e.g. `"linux"`. */
  readonly platform: string;
  /** `os.arch()`, e.g. `"x64"`. */
  readonly arch: string;
  /** Total memory of the host, in bytes. */
  readonly totalMemoryBytes: number;
}

/** The host's facts, now. */
export function hostFacts(): HostFacts {
  return {
    node: process.version,
    cores: availableParallelism(),
    platform: platform(),
    arch: arch(),
    totalMemoryBytes: totalmem(),
  };
}
