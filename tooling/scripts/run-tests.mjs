#!/usr/bin/env node
// `pnpm test`: run every package's tests through turbo (which builds first: kernel workers load
// built files), then add up the JSON reports vitest wrote beside each package and print the line
// CI reads: "N passed, N failed". Exits non-zero when turbo or any test failed. Extra arguments go
// to turbo (e.g. `pnpm test --filter @liveupdate/kernel`).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('../..', import.meta.url).pathname;
const groups = ['packages', 'plugins', 'apps', 'tooling', 'examples'];
const packageDirs = groups.flatMap((group) => {
  const dir = join(root, group);
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(join(dir, entry.name, 'package.json')))
    .map((entry) => join(dir, entry.name));
});
const reportOf = (dir) => join(dir, '.vitest-results.json');

for (const dir of packageDirs) rmSync(reportOf(dir), { force: true });

// --continue: one package's failure must not stop the others, or the count would be partial.
// --concurrency=2: every package's tests boot kernels and devices in workers of their own; on a
// 2-core machine more packages at once only make each test slower, never the run shorter.
const turbo = spawnSync(
  'pnpm',
  ['exec', 'turbo', 'run', 'test', '--continue', '--concurrency=2', ...process.argv.slice(2)],
  {
    cwd: root,
    stdio: 'inherit',
    env: { TURBO_TELEMETRY_DISABLED: '1', ...process.env },
  },
);

let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];
for (const dir of packageDirs) {
  if (!existsSync(reportOf(dir))) continue;
  const report = JSON.parse(readFileSync(reportOf(dir), 'utf8'));
  passed += report.numPassedTests;
  failed += report.numFailedTests;
  skipped += report.numPendingTests + report.numTodoTests;
  // A suite that failed to load has no failed tests but must not pass silently.
  if (report.numFailedTestSuites > 0 && report.numFailedTests === 0)
    failed += report.numFailedTestSuites;
  const name = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).name;
  for (const file of report.testResults) {
    const tests = file.assertionResults.filter((test) => test.status === 'failed');
    if (tests.length === 0 && file.status === 'failed')
      tests.push({ title: '', failureMessages: [file.message] });
    for (const test of tests) failures.push({ name, dir, file: file.name, test });
  }
}

// Each failure with the command that reruns it alone, and whether it ran out of time: a timeout
// on a loaded machine reads differently from a wrong value.
if (failures.length > 0) console.log('\nFailed:');
for (const { name, dir, file, test } of failures) {
  const message = (test.failureMessages ?? []).join('\n');
  const timedOut = /timed out/i.test(message);
  const where = relative(dir, file);
  console.log(`- ${name} ${where}${test.title ? ` > ${test.title}` : ''}`);
  if (timedOut) {
    const reason = message.match(/^.*timed out.*$/im)?.[0].trim();
    console.log(`  timed out (${reason}); the machine may have been busy`);
  }
  const filter = test.title ? ` -t ${JSON.stringify(test.title)}` : '';
  console.log(`  rerun: pnpm --filter ${name} exec vitest run ${where}${filter}`);
}

console.log('');
if (skipped > 0) console.log(`${skipped} skipped (not counted as passed)`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(turbo.status === 0 && failed === 0 ? 0 : 1);
