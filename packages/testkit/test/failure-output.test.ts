// What an author sees when a case or a law fails: the test's error names the case or law and
// points at the author's own line, not at the testkit's internals. Runs a nested vitest on an
// author-like project (fixtures/nested) and reads its JSON report.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const PROJECT = fileURLToPath(new URL('./fixtures/nested/', import.meta.url));
const FILE = join(PROJECT, 'broken-handler.nested.ts');
const VITEST = join(
  dirname(createRequire(import.meta.url).resolve('vitest/package.json')),
  'vitest.mjs',
);

interface Report {
  testResults: {
    assertionResults: { fullName: string; status: string; failureMessages: string[] }[];
  }[];
}

function lineOf(marker: string): number {
  return (
    readFileSync(FILE, 'utf8')
      .split('\n')
      .findIndex((line) => line.includes(marker)) + 1
  );
}

it('reports a failing case and a failing law at the lines of the author that made them', () => {
  const out = mkdtempSync(join(tmpdir(), 'testkit-nested-'));
  try {
    const report = join(out, 'report.json');
    try {
      execFileSync(
        process.execPath,
        [
          VITEST,
          'run',
          '--root',
          PROJECT,
          '--reporter=json',
          `--outputFile=${report}`,
          '-t',
          'writing past|preserve then unpreserve',
        ],
        { cwd: PROJECT, stdio: 'pipe', env: { ...process.env, CI: 'true' } },
      );
    } catch {
      // vitest exits non-zero: the tests fail, as they should.
    }
    const results = (JSON.parse(readFileSync(report, 'utf8')) as Report).testResults.flatMap(
      (file) => file.assertionResults,
    );
    const failed = Object.fromEntries(
      results
        .filter((r) => r.status === 'failed')
        .map((r) => [r.fullName, r.failureMessages.join('\n')]),
    );
    expect(Object.keys(failed).sort()).toEqual([
      'leaky note-v1 conformance preserve then unpreserve leaves nothing behind',
      'note-v1 cases failing operations writing past the end of a note',
    ]);
    const caseFailure = failed['note-v1 cases failing operations writing past the end of a note']!;
    expect(caseFailure).toMatch(
      /^Error: failing case "writing past the end of a note" at broken-handler\.nested\.ts:\d+:\d+: op failed with EFBIG \(note: full\); expected ENOSPC\n/,
    );
    expect(caseFailure).toContain(`at ${FILE}:${lineOf('// the failing case') - 1}:`);
    const lawFailure =
      failed['leaky note-v1 conformance preserve then unpreserve leaves nothing behind']!;
    expect(lawFailure).toMatch(/frames allocated: \d+ → \d+/);
    expect(lawFailure).toContain(`at ${FILE}:${lineOf('// the conformance call') - 1}:`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
