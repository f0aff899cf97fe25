import { describe, it } from 'vitest';
import { callerSite, errorAt } from './call-site.js';
import {
  CONFORMANCE_LAWS,
  checkConformanceLaw,
  checkConformanceOptions,
  type ConformanceOptions,
} from './conformance-laws.js';

/** Per law: several boots and live updates, well within it; a hung law is cut at 30 s. */
const LAW_TEST_TIMEOUT_MS = 60_000;

/**
 * The conformance suite for a file handler, as vitest tests: one `describe` named `options.name`
 * with one test per law of the handler contract (see `CONFORMANCE_LAWS`). Each law boots its own
 * machine with your modules, makes files with `createFile` (or, for files that depend on other
 * files of their session, `createSession`, whose files it preserves in order and retrieves as
 * `readContent` asks for them), live-updates through real kexecs
 * with page poisoning on, and checks what `readContent` reads, what the kernel log says and what
 * the kernel counts (frames allocated, KHO preservations, open files), reporting a difference by
 * name ("frames allocated: 12 → 14"). Laws about optional ops are skipped when the handler does
 * not implement them. A law the handler cannot meet by design is declared in `exceptions` with the
 * reason: it is reported skipped with that reason while it fails, and fails once it holds. Call it
 * at the top level of a test file.
 *
 * @example
 * ```ts
 * import { describeConformance } from '@liveupdate/testkit';
 *
 * describeConformance({
 *   name: 'memfd-v2 conformance',
 *   handlerCompatible: 'memfd-v2',
 *   modules: ['@liveupdate/plugin-memfd'],
 *   moduleBase: import.meta.url,
 *   async createFile(process) {
 *     const fd = await process.memfdCreate('conformance');
 *     await process.pwrite(fd, new TextEncoder().encode('hello'), 0);
 *     return fd;
 *   },
 *   readContent: (process, fd) => process.pread(fd, 4096, 0),
 *   async mutate(process, fd) {
 *     await process.pwrite(fd, new TextEncoder().encode('HELLO'), 0);
 *   },
 * });
 * ```
 *
 * @throws TypeError at once, for malformed options (naming the option and what was expected)
 */
export function describeConformance(options: ConformanceOptions): void {
  checkConformanceOptions('describeConformance', options);
  const site = callerSite();
  describe(options.name, () => {
    for (const law of CONFORMANCE_LAWS) {
      it(
        law.title,
        async (context) => {
          const verdict = await checkConformanceLaw(law.id, options);
          if (verdict.status === 'skipped') context.skip(verdict.message);
          if (verdict.status === 'failed') {
            throw errorAt(`${law.title}: ${verdict.message ?? 'failed'}`, site, verdict.cause);
          }
        },
        LAW_TEST_TIMEOUT_MS,
      );
    }
  });
}
