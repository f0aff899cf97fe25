// Shared vitest preset. Every package's vitest.config.ts spreads it.
//
// - oxc keeps legacy decorators and emits decorator metadata, which tsyringe needs (TOOLCHAIN.md
//   pitfall 3: esbuild-based transforms drop it silently).
// - The JSON reporter writes .vitest-results.json beside each package; tooling/scripts/run-tests.mjs
//   adds them up into the "N passed, N failed" line that CI reads.
/** @type {import('vitest/config').UserConfig} */
export const preset = {
  oxc: {
    decorator: { legacy: true, emitDecoratorMetadata: true },
  },
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    reporters: ['default', 'json'],
    outputFile: { json: '.vitest-results.json' },
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
};
