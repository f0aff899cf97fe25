import { describe, expect, test } from 'vitest';
import { FdtError, decodeFdt, encodeFdt, readFdtHeader } from './index.js';
import type { Fdt, FdtHeader } from './index.js';
import { sampleBlobs } from '../test/sample-trees.js';

// Seeded so a failure replays: rerun with FDT_FUZZ_SEED=<seed printed in the failure>.
// FDT_FUZZ_ITERATIONS raises the count for a longer local run; FDT_FUZZ_STATS=1 prints outcomes.
const seed = Number(process.env['FDT_FUZZ_SEED'] ?? 0x5eed_f17e) >>> 0;
const iterations = Number(process.env['FDT_FUZZ_ITERATIONS'] ?? 2000);

/** mulberry32: a tiny, well-mixed 32-bit PRNG; returns an unsigned 32-bit integer. */
function mulberry32(state: number): () => number {
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

type Random = ReturnType<typeof mulberry32>;
const below = (random: Random, n: number): number => (n <= 0 ? 0 : random() % n);
const pick = <T>(random: Random, items: readonly T[]): T => items[below(random, items.length)] as T;

/** Values that sit on the edges the decoder must check; `header` is the valid base blob's. */
function boundaryValue(random: Random, blob: Uint8Array, header: FdtHeader): number {
  return pick(random, [
    0,
    1,
    2,
    3,
    4,
    8,
    9,
    16,
    17,
    39,
    40,
    41,
    44,
    48,
    0x7fffffff,
    0x80000000,
    0xfffffff0,
    0xfffffffc,
    0xffffffff,
    blob.length - 1,
    blob.length,
    blob.length + 1,
    blob.length + 4,
    header.structOffset,
    header.structOffset + header.structSize,
    header.stringsOffset,
    header.stringsOffset + header.stringsSize,
    header.stringsSize,
    header.structSize,
    random(),
  ]);
}

function setU32(blob: Uint8Array, at: number, value: number): void {
  if (at + 4 <= blob.length) new DataView(blob.buffer, blob.byteOffset).setUint32(at, value >>> 0);
}

/**
 * Applies one random corruption to a copy of `current` and says what it did. Offsets come from
 * the header of `base`, the valid blob the corruptions started from.
 */
function mutate(
  random: Random,
  current: Uint8Array,
  base: Uint8Array,
): { blob: Uint8Array; what: string } {
  const header = readFdtHeader(base);
  let blob = current.slice();
  const kind = below(random, 7);
  switch (kind) {
    case 0: {
      const flips = 1 + below(random, 8);
      for (let i = 0; i < flips; i++) {
        const at = below(random, blob.length);
        blob[at] = (blob[at] ?? 0) ^ (1 << below(random, 8));
      }
      return { blob, what: `${flips} bit flips` };
    }
    case 1: {
      const at = below(random, blob.length);
      const value = pick(random, [0, 0xff, 1, 2, 3, 4, 9, 0x2f, 0x40, random() & 0xff]);
      blob[at] = value;
      return { blob, what: `byte ${at} = ${value}` };
    }
    case 2: {
      const length = below(random, blob.length);
      return { blob: blob.slice(0, length), what: `truncated to ${length}` };
    }
    case 3: {
      const field = below(random, 10);
      const value = boundaryValue(random, blob, header);
      setU32(blob, field * 4, value);
      return { blob, what: `header field ${field} = ${value}` };
    }
    case 4: {
      // A word inside the structure block: a token, a length or a name offset.
      const words = Math.max(1, header.structSize / 4);
      const at = header.structOffset + 4 * below(random, words);
      const value = pick(random, [
        0,
        1,
        2,
        3,
        4,
        5,
        9,
        0xff,
        0xffffffff,
        0x7fffffff,
        boundaryValue(random, blob, header),
      ]);
      setU32(blob, at, value);
      return { blob, what: `struct word at ${at} = ${value}` };
    }
    case 5: {
      // Cut or repeat a run of structure words, keeping the header as it was.
      const start = header.structOffset + 4 * below(random, header.structSize / 4);
      const length = 4 * (1 + below(random, 6));
      const end = Math.min(start + length, blob.length);
      const pieces =
        below(random, 2) === 0
          ? [blob.subarray(0, start), blob.subarray(end)]
          : [blob.subarray(0, end), blob.subarray(start, end), blob.subarray(end)];
      const joined = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const piece of pieces) {
        joined.set(piece, at);
        at += piece.length;
      }
      blob = joined;
      return {
        blob,
        what: `struct words ${start}..${end} ${pieces.length === 2 ? 'cut' : 'repeated'}`,
      };
    }
    default: {
      const extra = new Uint8Array(1 + below(random, 32)).map(() => random() & 0xff);
      const grown = new Uint8Array(blob.length + extra.length);
      grown.set(blob);
      grown.set(extra, blob.length);
      if (below(random, 2) === 0) setU32(grown, 4, grown.length);
      return { blob: grown, what: `${extra.length} random bytes appended` };
    }
  }
}

describe('decodeFdt under random corruption', () => {
  test(`returns a re-encodable tree or throws FdtError for ${iterations} mutated blobs (seed ${seed})`, () => {
    const random = mulberry32(seed);
    const bases = sampleBlobs();
    const outcomes = new Map<string, number>();
    const count = (key: string) => outcomes.set(key, (outcomes.get(key) ?? 0) + 1);

    for (let i = 0; i < iterations; i++) {
      const base = pick(random, bases);
      let blob = base.blob;
      const steps: string[] = [];
      const rounds = 1 + below(random, 3);
      for (let r = 0; r < rounds; r++) {
        const step = mutate(random, blob, base.blob);
        blob = step.blob;
        steps.push(step.what);
      }
      const where = `seed ${seed}, iteration ${i}, ${base.name} blob, ${steps.join(' + ')}`;

      let tree: Fdt;
      try {
        tree = decodeFdt(blob);
      } catch (error) {
        if (!(error instanceof FdtError)) {
          throw new Error(`decodeFdt threw a non-FdtError (${where}): ${String(error)}`, {
            cause: error,
          });
        }
        if (error.offset !== undefined && (error.offset < 0 || error.offset > blob.length)) {
          throw new Error(
            `error offset ${error.offset} outside the blob (${where}): ${error.message}`,
          );
        }
        count(error.code);
        continue;
      }
      try {
        expect(decodeFdt(encodeFdt(tree))).toEqual(tree);
      } catch (error) {
        throw new Error(`decoded tree does not survive re-encoding (${where}): ${String(error)}`, {
          cause: error,
        });
      }
      count('decoded');
    }

    if (process.env['FDT_FUZZ_STATS']) console.log(Object.fromEntries(outcomes));
    // The mutations must reach both outcomes and many checks, or the fuzzing proves little.
    expect(outcomes.get('decoded') ?? 0).toBeGreaterThan(iterations / 20);
    expect(outcomes.size).toBeGreaterThan(6);
  });
});
