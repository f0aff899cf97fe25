import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { readmeExamples, typecheckReadmeExamples } from '@liveupdate/vitest-config/readme-example';
import {
  runTypeScriptExample,
  transpileExample,
  typecheckFiles,
} from '@liveupdate/vitest-config/typecheck';

const blocks = readmeExamples(import.meta.url).map(({ source }) => source);
const [module, main] = blocks;
const startingWith = (firstLine: string) =>
  blocks.find((block) => block.split('\n', 1)[0] === firstLine);
const conformance = startingWith('// stamp.test.ts');
const versionMatrix = startingWith('// stamp-versions.test.ts');

// Inside the package, so that `@liveupdate/testkit` resolves to this package by self-reference.
// The kernel's workers load JavaScript: the module is compiled, as an author's build would.
const dir = mkdtempSync(fileURLToPath(new URL('./readme-', import.meta.url)));
writeFileSync(join(dir, 'stamp-module.js'), transpileExample(module!));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('type-checks every TypeScript example of the README', () => {
  expect(module!.split('\n', 1)[0]).toBe('// stamp-module.ts');
  expect(typecheckReadmeExamples(import.meta.url)).toEqual([]);
});

it('runs the README example: a stamp preserved in kernel 1 is read back in kernel 2', () => {
  expect(runTypeScriptExample(main!, dir)).toBe('42n');
});

/** Run vitest on the test files of `root` (its own config); the title and status of each test. */
function runNestedVitest(root: string, include: string): Record<string, string> {
  // Its own vitest config, so that the nested run does not take this package's.
  writeFileSync(
    join(root, 'vitest.config.mjs'),
    `export default { test: { include: ['${include}'] } };`,
  );
  const vitest = join(
    dirname(createRequire(import.meta.url).resolve('vitest/package.json')),
    'vitest.mjs',
  );
  const report = join(root, 'report.json');
  try {
    execFileSync(
      process.execPath,
      [vitest, 'run', '--root', root, '--reporter=json', `--outputFile=${report}`],
      { cwd: root, stdio: 'pipe', env: { ...process.env, CI: 'true' } },
    );
  } catch {
    // A failing test makes vitest exit non-zero; the report says which.
  }
  const results = JSON.parse(readFileSync(report, 'utf8')) as {
    testResults: { assertionResults: { title: string; status: string }[] }[];
  };
  return Object.fromEntries(
    results.testResults.flatMap((f) => f.assertionResults).map((r) => [r.title, r.status]),
  );
}

it("runs the README's conformance suite and handler cases for the stamp: every test passes", () => {
  writeFileSync(join(dir, 'stamp.test.ts'), conformance!);
  const statuses = runNestedVitest(dir, '*.test.ts');
  // 10 laws (the stamp has no freeze, so that law is skipped) and 3 cases.
  expect(Object.entries(statuses).filter(([, status]) => status === 'failed')).toEqual([]);
  expect(Object.values(statuses).filter((status) => status === 'passed')).toHaveLength(13);
  expect(statuses).toMatchObject({ 'freeze then unfreeze round-trips': 'skipped' });
});

it("type-checks and runs the README's version matrix: every pair of the stamp's builds behaves as declared", () => {
  const root = join(dir, 'versions');
  mkdirSync(root);
  for (const file of [
    'stamp-build.js',
    'stamp-v1-module.js',
    'stamp-v2-module.js',
    'stamp-v3-module.js',
  ]) {
    copyFileSync(fileURLToPath(new URL(`./fixtures/${file}`, import.meta.url)), join(root, file));
  }
  const example = join(root, 'stamp-versions.test.ts');
  writeFileSync(example, versionMatrix!);

  expect(typecheckFiles([example])).toEqual([]);

  const statuses = runNestedVitest(root, '*.test.ts');
  expect(Object.entries(statuses).filter(([, status]) => status !== 'passed')).toEqual([]);
  // Three versions: nine ordered pairs, of which 1.0 and 2.0 with 3.0 either way are refused.
  expect(Object.keys(statuses)).toHaveLength(9);
  expect(statuses).toMatchObject({
    '2.0 → 1.0 updates, written as stamp-v1': 'passed',
    '2.0 → 2.0 updates, written as stamp-v2': 'passed',
    '1.0 → 3.0 is refused before the blackout': 'passed',
    '3.0 → 2.0 is refused before the blackout': 'passed',
  });
}, 300_000);
