import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    // Vitest's 5 s default is far too short here: a live-update test boots a kernel in a worker
    // thread and kexecs into a new worker that imports every module afresh, often several times,
    // and on a busy machine (CI, tests in parallel) that takes many times what it takes alone.
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
