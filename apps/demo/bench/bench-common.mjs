// What the demo's benchmarks share: medians with their spread, and the disk baseline's file I/O.
import { closeSync, constants, fsyncSync, openSync, readSync, writeSync } from 'node:fs';

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** `median [min–max]` of `values`, with `digits` decimals. */
export function spread(values, digits = 2) {
  const fixed = (value) => value.toFixed(digits);
  return `${fixed(median(values))} [${fixed(Math.min(...values))}–${fixed(Math.max(...values))}]`;
}

/** Write every byte of `mapping` to a new file at `path`, then fsync it. */
export function writeMappingFile(path, mapping) {
  const fd = openSync(path, 'w');
  try {
    for (const { bytes } of mapping.segments) {
      // One write moves at most 2 GiB - 1 bytes.
      for (let done = 0; done < bytes.length;) {
        done += writeSync(fd, bytes, done, Math.min(WRITE_BYTES, bytes.length - done));
      }
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

const CHUNK_BYTES = 1024 * 1024;
const WRITE_BYTES = 64 * CHUNK_BYTES;
const BLOCK_BYTES = 4096;

/**
 * Read the file at `path` into `mapping`, segment by segment, bypassing the host's page cache
 * when it can: with `O_DIRECT`, through a bounce buffer aligned for it (a typed array's address
 * cannot be chosen, so the first offset the kernel accepts is found by trying), then copied into
 * the mapping — as a new kernel, whose page cache is empty, would read it from the disk. Where
 * `O_DIRECT` is refused (tmpfs, say) it reads through the page cache. Returns whether the read
 * bypassed it. The file's size is a whole number of pages, like the mapping's.
 */
export function readMappingFile(path, mapping) {
  const direct = openDirect(path);
  const fd = direct?.fd ?? openSync(path, 'r');
  try {
    for (const { offset, bytes } of mapping.segments) {
      for (let done = 0; done < bytes.length;) {
        const target = direct
          ? direct.buffer.subarray(0, Math.min(CHUNK_BYTES, bytes.length - done))
          : bytes.subarray(done);
        const read = readSync(fd, target, 0, target.length, offset + done);
        if (read === 0) throw new Error(`${path} ended at ${offset + done} bytes`);
        if (direct) bytes.set(target.subarray(0, read), done);
        done += read;
      }
    }
  } finally {
    closeSync(fd);
  }
  return direct !== undefined;
}

/** `path` opened with `O_DIRECT` and a buffer aligned for it, or `undefined` when refused. */
function openDirect(path) {
  if (constants.O_DIRECT === undefined) return undefined;
  let fd;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_DIRECT);
  } catch {
    return undefined;
  }
  const raw = new Uint8Array(CHUNK_BYTES + 2 * BLOCK_BYTES);
  for (let start = 0; start < 2 * BLOCK_BYTES; start += 8) {
    const buffer = raw.subarray(start, start + CHUNK_BYTES);
    try {
      readSync(fd, buffer, 0, BLOCK_BYTES, 0);
      return { fd, buffer };
    } catch (error) {
      if (error.code !== 'EINVAL') {
        closeSync(fd);
        throw error;
      }
    }
  }
  closeSync(fd);
  return undefined;
}
