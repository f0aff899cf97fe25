// The fuzzer in CI: a small seeded budget of damaged live updates, every family twice (memfd and
// device scenarios), must show no silent misread, hang or host failure; in reseal mode, no misread
// but the known ones only a checksum can catch; and the fuzzer itself must see a misread when
// there is one, or its zero would mean nothing.
import { describe, expect, it } from 'vitest';
import { FAILING_OUTCOMES, runFuzz, tally } from '../src/fuzz-run.js';
import type { UpdateResult } from '../src/fuzz-update.js';
import { fuzzUpdate } from '../src/fuzz-update.js';
import { MUTATION_FAMILIES, type MutationFamily } from '../src/mutation-families.js';

describe('pnpm fuzz', () => {
  // Each update boots two kernels; 40 of them take minutes on a loaded 2-core machine.
  it(
    'reads no damaged handover silently: every family twice, seed 1',
    { timeout: 900_000 },
    async () => {
      const state = await runFuzz({
        seed: 1,
        updates: MUTATION_FAMILIES.length * 2,
        families: MUTATION_FAMILIES,
        jobs: 2,
      });
      const failing = state.results.filter((r) => FAILING_OUTCOMES.includes(r.outcome));
      expect(
        failing.map((r) => `${r.index} ${r.family}: ${r.mutation}: ${r.outcome}: ${r.detail}`),
      ).toEqual([]);
      // Every family found something to damage: a family that silently skips tests nothing.
      for (const [family, row] of tally(state.results))
        expect({ family, skipped: row.skipped }).toEqual({ family, skipped: 0 });
    },
  );

  it(
    'in reseal mode, reads nothing silently but two valid values swapped: every family once, seed 1',
    { timeout: 900_000 },
    async () => {
      const state = await runFuzz({
        seed: 1,
        updates: MUTATION_FAMILIES.length,
        families: MUTATION_FAMILIES,
        jobs: 2,
        reseal: true,
      });
      const failing = state.results.filter(
        (r) => FAILING_OUTCOMES.includes(r.outcome) && !onlyAChecksumCatches(r),
      );
      expect(
        failing.map((r) => `${r.index} ${r.family}: ${r.mutation}: ${r.outcome}: ${r.detail}`),
      ).toEqual([]);
      for (const [family, row] of tally(state.results))
        expect({ family, skipped: row.skipped }).toEqual({ family, skipped: 0 });
      // Reseal mode reseals: a run whose every mutation went unsealed would test nothing new.
      expect(
        state.results.filter((r) => r.mutation?.endsWith(', resealed')).length,
      ).toBeGreaterThan(MUTATION_FAMILIES.length / 2);
    },
  );

  it('calls a change of a memfd data page, which no checksum covers, a silent misread', async () => {
    const contents: MutationFamily = {
      name: 'contents',
      description: "a byte of a memfd's first data page",
      apply: ({ memory, map }) => {
        // memfd_luo_run_ser.pfn, u64 @0: the first folio of the first memfd-v3 run.
        const [run] = map.files
          .filter((f) => f.compatible === 'memfd-v3')
          .flatMap((f) => f.entries);
        const pfn = Number(memory.readU64(run!.phys));
        memory.view(pfn * 4096, 1)[0]! ^= 0xff;
        return `byte 0 of pfn ${pfn} inverted`;
      },
    };
    const result = await fuzzUpdate({ seed: 1, index: 0, family: contents });
    expect(result.outcome).toBe('silent-misread');
    expect(result.detail).toMatch(/contents differ/);
  });
});

/**
 * The silent misreads reseal mode may find (README, "Findings"): two valid tokens, names or `data`
 * pointers swapped between entries of the same shape, every checksum recomputed. Every structure
 * check must accept them; only a checksum catches them.
 */
function onlyAChecksumCatches(result: UpdateResult): boolean {
  const swap = { 'file-tokens': 'token', 'session-names': 'name', 'file-data': 'data' }[
    result.family
  ];
  return (
    result.outcome === 'silent-misread' &&
    swap !== undefined &&
    new RegExp(`\\.${swap} ⇄ .*\\.${swap}, resealed$`).test(result.mutation ?? '')
  );
}
