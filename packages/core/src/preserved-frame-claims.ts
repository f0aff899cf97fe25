import { ERRNO, KernelError, PAGE_SIZE, hex, type PhysicalMemory } from '@liveupdate/machine';
import type { FrameRange } from '@liveupdate/kernel';
import { callHandler, type HandlerCallContext } from './handler-call.js';
import type { LuoFile, LuoSession } from './luo-session.js';

/** One range a file claims, in frames: `[start, end)`. */
interface Claim {
  readonly start: number;
  readonly end: number;
  readonly file: LuoFile;
}

/**
 * At deserialization, before any file is retrieved: ask the handler of every incoming file that
 * has `preservedFrames` which frames the file claims, and fail every file that claims a frame
 * another file (of any session) claims too. A failed file gets a negative `retrieveStatus` (sticky
 * `EIO`, or the errno `preservedFrames` threw), so it is never retrieved and its `finish` leaves
 * its frames alone; the log names both files and the range. The other files are unaffected.
 */
export async function checkPreservedFrameClaims(
  sessions: readonly LuoSession[],
  calls: HandlerCallContext,
  memory: PhysicalMemory,
): Promise<void> {
  const claims: Claim[] = [];
  for (const session of sessions) {
    for (const file of session.files) {
      const ranges = await claimedBy(file, calls, memory);
      for (const { pfn, frames } of ranges ?? [])
        claims.push({ start: pfn, end: pfn + frames, file });
    }
  }
  claims.sort((a, b) => a.start - b.start);
  const reported = new Set<string>();
  let open: Claim[] = [];
  for (const claim of claims) {
    open = open.filter((earlier) => earlier.end > claim.start);
    for (const earlier of open) {
      if (earlier.file === claim.file) continue;
      const pair = [earlier.file, claim.file];
      const key = pair.map(describeFile).sort().join(' and ');
      if (reported.has(key)) continue;
      reported.add(key);
      const range = `[${hex(claim.start * PAGE_SIZE)}, ${hex(Math.min(earlier.end, claim.end) * PAGE_SIZE)})`;
      calls.log.err(`LUO: frames ${range} are claimed by ${key}; both fail with EIO`);
      for (const file of pair) file.retrieveStatus = -ERRNO.EIO;
    }
    open.push(claim);
  }
}

/** `file`'s claimed ranges, checked; `undefined` when its handler has no `preservedFrames`. */
async function claimedBy(
  file: LuoFile,
  calls: HandlerCallContext,
  memory: PhysicalMemory,
): Promise<readonly FrameRange[] | undefined> {
  const { handler } = file;
  if (!handler.preservedFrames) return undefined;
  try {
    const ranges = await callHandler(calls, handler, 'preservedFrames', () =>
      handler.preservedFrames!(file.args()),
    );
    if (!Array.isArray(ranges)) {
      throw new KernelError(
        'EIO',
        `${handler.compatible}: preservedFrames returned ${String(ranges)}, not an array`,
      );
    }
    for (const range of ranges as unknown[]) {
      const { pfn, frames } = (range ?? {}) as Partial<FrameRange>;
      if (
        !Number.isSafeInteger(pfn) ||
        !Number.isSafeInteger(frames) ||
        pfn! < 0 ||
        frames! <= 0 ||
        pfn! + frames! > memory.frames
      ) {
        throw new KernelError(
          'EIO',
          `${handler.compatible}: preservedFrames returned pfn ${String(pfn)} frames ${String(frames)}, not a range of frames in RAM`,
        );
      }
    }
    return ranges;
  } catch (error) {
    const errno = KernelError.isInstance(error) ? error.errno : ERRNO.EIO;
    file.retrieveStatus = -errno;
    calls.log.err(
      `LUO: ${describeFile(file)}: the frames it claims cannot be read (${(error as Error).message}); it fails with ${KernelError.isInstance(error) ? error.code : 'EIO'}`,
    );
    return undefined;
  }
}

function describeFile(file: LuoFile): string {
  return `session "${file.session.name}" token ${file.token}`;
}
