// Shared vitest preset. Every package's vitest.config.ts spreads it.
//
// - oxc keeps legacy decorators and emits decorator metadata, which tsyringe needs (TOOLCHAIN.md
//   pitfall 3: esbuild-based transforms drop it silently).
// - The JSON reporter writes .vitest-results.json beside each package; tooling/scripts/run-tests.mjs
//   adds them up into the "N passed, N failed" line that CI reads.
// - Timeouts are generous: a live-update test boots two kernels in workers, and on a loaded 2-core
//   machine (CI beside another test run) that takes many times what it takes alone. Waits inside
//   tests use wait-until.js, which says what it was waiting for when its own bound is hit.
/** @type {import('vitest/config').UserConfig} */
export const preset = {
  oxc: {
    decorator: { legacy: true, emitDecoratorMetadata: true },
  },
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    reporters: ['default', 'json'],
    outputFile: { json: '.vitest-results.json' },
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
};
