import { afterAll, describe, it } from 'vitest';
import { callerSite, errorAt } from './call-site.js';
import {
  PAIR_DEADLINE_MS,
  formatVersionMatrix,
  pairName,
  runVersionPair,
  versionPairs,
  type VersionMatrixOptions,
  type VersionPairVerdict,
} from './version-matrix.js';

/** Per pair: its own deadline, and the time to shut its machine down after one. */
const PAIR_TEST_TIMEOUT_MS = 2 * PAIR_DEADLINE_MS;

/**
 * The version matrix of a handler, as vitest tests: one `describe` named `options.name` with one
 * test per ordered pair of `options.versions` (writer → reader, a version with itself too). Each
 * pair boots the writer's kernel, preserves a file made with `createFile`, `kexec_load`s the
 * reader's kernel and reboots into it, with page poisoning on. A pair whose writer's `writes` and
 * reader's `reads` meet must update, the file written in the first of the writer's `writes` the
 * reader reads and arriving with equal content (`readContent`); any other pair must be refused
 * before the blackout (`CHECK_KEXEC` names the file, `reboot` fails with `ENOEXEC`, nothing was
 * frozen, the writer's kernel runs on with the file unchanged). A pair that behaves otherwise
 * fails with a message naming the pair, the declaration and what happened. After the tests, the
 * table of the pairs (writer, reader, expected, outcome, format) is printed. Call it at the top
 * level of a test file.
 *
 * @example
 * ```ts
 * import { describeVersionMatrix } from '@liveupdate/testkit';
 *
 * describeVersionMatrix({
 *   name: 'stamp versions',
 *   moduleBase: import.meta.url,
 *   versions: [
 *     { name: '1', modules: ['./stamp-v1.js'], writes: ['stamp-v1'], reads: ['stamp-v1'] },
 *     {
 *       name: '2',
 *       modules: ['./stamp-v2.js'],
 *       writes: ['stamp-v2', 'stamp-v1'],
 *       reads: ['stamp-v2', 'stamp-v1'],
 *     },
 *   ],
 *   createFile: (process) => process.syscall('stamp_create', 42) as Promise<number>,
 *   readContent: (process, fd) => process.syscall('stamp_read', fd),
 * });
 * ```
 *
 * @throws TypeError at once, for malformed options (naming the option or version)
 */
export function describeVersionMatrix(options: VersionMatrixOptions): void {
  const pairs = versionPairs('describeVersionMatrix', options);
  const site = callerSite();
  describe(options.name, () => {
    const verdicts: VersionPairVerdict[] = [];
    for (const pair of pairs) {
      const title =
        pair.expected === 'updates'
          ? `${pairName(pair)} updates, written as ${pair.expectedFormat}`
          : `${pairName(pair)} is refused before the blackout`;
      it(
        title,
        async () => {
          const verdict = await runVersionPair(options, pair);
          verdicts.push(verdict);
          if (!verdict.passed) throw errorAt(verdict.message ?? 'failed', site, verdict.cause);
        },
        PAIR_TEST_TIMEOUT_MS,
      );
    }
    afterAll(() => {
      if (verdicts.length > 0) console.log(`${options.name}\n${formatVersionMatrix(verdicts)}`);
    });
  });
}
