import type { Process } from '@liveupdate/machine';

/**
 * What the testkit module (`@liveupdate/testkit/module`) reports of the running kernel through
 * the `testkit_stats` syscall: the counts a leak shows up in. Frame and pin counts are the page
 * allocator's, KHO counts are the kernel's own, open files the VFS's.
 */
export interface TestkitStats {
  readonly framesAllocated: number;
  readonly framesFree: number;
  /** Firmware, the memory map, and frames the previous kernel preserved that are not restored. */
  readonly framesReserved: number;
  /** Folios (and their frames) this kernel preserves for the next one. */
  readonly khoPreservedFolios: number;
  readonly khoPreservedFrames: number;
  /** Folios (and frames) the previous kernel preserved that nobody restored yet. */
  readonly khoUnrestoredFolios: number;
  readonly khoUnrestoredFrames: number;
  /**
   * Folios (and frames) the previous kernel preserved that nobody restored, which KHO freed as
   * unclaimed when the last incoming session finished (see docs/kho-handover.md).
   */
  readonly khoUnclaimedFolios: number;
  readonly khoUnclaimedFrames: number;
  /** Frames of pinned folios (memfd pins what it preserves, as `memfd_pin_folios` does). */
  readonly pinnedFrames: number;
  /** Files with references: fds, mappings, and references the kernel holds (LUO's among them). */
  readonly openFiles: number;
}

/** A name of a {@link TestkitStats} count. */
export type TestkitStat = keyof TestkitStats;

/** How each count is named in a leak report. */
export const TESTKIT_STAT_NAMES: Readonly<Record<TestkitStat, string>> = {
  framesAllocated: 'frames allocated',
  framesFree: 'frames free',
  framesReserved: 'frames reserved',
  khoPreservedFolios: 'KHO preserved folios',
  khoPreservedFrames: 'KHO preserved frames',
  khoUnrestoredFolios: 'KHO unrestored folios',
  khoUnrestoredFrames: 'KHO unrestored frames',
  khoUnclaimedFolios: 'KHO unclaimed folios',
  khoUnclaimedFrames: 'KHO unclaimed frames',
  pinnedFrames: 'pinned frames',
  openFiles: 'open files',
};

/**
 * The counts that must come back to where they were when a case leaves nothing behind: frames
 * allocated, KHO preservations, pinned frames and file references. (Free and reserved frames
 * follow from them.)
 */
export const LEAK_STATS: readonly TestkitStat[] = [
  'framesAllocated',
  'khoPreservedFolios',
  'khoPreservedFrames',
  'khoUnrestoredFolios',
  'khoUnrestoredFrames',
  'khoUnclaimedFolios',
  'khoUnclaimedFrames',
  'pinnedFrames',
  'openFiles',
];

/**
 * The running kernel's {@link TestkitStats}, through `process`. The kernel must have the testkit
 * module loaded, as every image of `liveUpdateImage` does (`ENOSYS` otherwise).
 */
export async function testkitStats(process: Process): Promise<TestkitStats> {
  return (await process.syscall('testkit_stats')) as TestkitStats;
}

/**
 * The counts among `stats` that differ between `before` and `after`, by name:
 * `["frames allocated: 12 → 14", "open files: 3 → 4"]`. Empty when they all match.
 *
 * By default `stats` is {@link LEAK_STATS}: frames allocated, KHO preserved, unrestored and
 * unclaimed folios and frames, pinned frames and open files. Frames free and reserved are left
 * out, since they move with those (a leaked frame shows as allocated); pass the counts you want
 * to include them: `statsDifferences(before, after, [...LEAK_STATS, 'framesFree',
 * 'framesReserved'])`, or every count with `Object.keys(TESTKIT_STAT_NAMES)`.
 */
export function statsDifferences(
  before: TestkitStats,
  after: TestkitStats,
  stats: readonly TestkitStat[] = LEAK_STATS,
): string[] {
  return stats
    .filter((stat) => before[stat] !== after[stat])
    .map((stat) => `${TESTKIT_STAT_NAMES[stat]}: ${before[stat]} → ${after[stat]}`);
}
