// The fuzzer in CI: a small seeded budget of damaged live updates, every family twice, must show
// no silent misread, hang or host failure; and the fuzzer itself must see a misread when there is
// one, or its zero would mean nothing.
import { describe, expect, it } from 'vitest';
import { FAILING_OUTCOMES, runFuzz, tally } from '../src/fuzz-run.js';
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
