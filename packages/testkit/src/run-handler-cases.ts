import { describe, it } from 'vitest';
import { callerSite, errorAt } from './call-site.js';
import {
  checkHandlerCase,
  checkHandlerCases,
  type HandlerCaseKind,
  type HandlerCasesOptions,
} from './handler-cases.js';

/** Per case: a boot, and for a preservable file a live update. */
const CASE_TEST_TIMEOUT_MS = 30_000;

const GROUPS: Readonly<Record<HandlerCaseKind, string>> = {
  preservable: 'preservable files',
  refused: 'refused files',
  failing: 'failing operations',
};

/**
 * The table tester for the cases specific to one handler, modelled on ESLint's RuleTester: files
 * that must be preservable, files that must be refused, and operations that must fail with a
 * given errno. The cases are validated first (see `checkHandlerCases`: unknown keys, duplicate
 * names, a failing case without an errno throw a `TypeError` naming the case), then each becomes
 * one vitest test, on a machine of its own, whose failure names the case and points at where it
 * is written (exactly, for cases made with `handlerCase()`).
 *
 * @example
 * ```ts
 * runHandlerCases({
 *   name: 'memfd-v2 cases',
 *   handlerCompatible: 'memfd-v2',
 *   modules: ['@liveupdate/plugin-memfd'],
 *   moduleBase: import.meta.url,
 *   preservable: [
 *     handlerCase({ name: 'an empty memfd', setup: ({ process }) => process.memfdCreate('e') }),
 *   ],
 *   refused: [
 *     handlerCase({
 *       name: 'a hugetlb memfd',
 *       setup: ({ process }) => process.memfdCreate('h', MFD_HUGETLB),
 *       errno: 'ENOENT',
 *     }),
 *   ],
 *   failing: [
 *     handlerCase({
 *       name: 'growing a preserved memfd',
 *       async setup({ process, session }) {
 *         const fd = await process.memfdCreate('g');
 *         await session.preserveFd(fd, 1n);
 *         return fd;
 *       },
 *       op: ({ process }, fd) => process.ftruncate(fd, 4096),
 *       errno: 'EPERM',
 *     }),
 *   ],
 * });
 * ```
 */
export function runHandlerCases(options: HandlerCasesOptions): void {
  const entries = checkHandlerCases('runHandlerCases', options, callerSite());
  describe(options.name, () => {
    for (const kind of Object.keys(GROUPS) as HandlerCaseKind[]) {
      const group = entries.filter((entry) => entry.kind === kind);
      if (group.length === 0) continue;
      describe(GROUPS[kind], () => {
        for (const entry of group) {
          it(
            entry.name,
            async () => {
              const verdict = await checkHandlerCase(options, entry);
              if (!verdict.passed)
                throw errorAt(verdict.message ?? 'failed', entry.site, verdict.cause);
            },
            CASE_TEST_TIMEOUT_MS,
          );
        }
      });
    }
  });
}
