#!/usr/bin/env node
// `pnpm check:packages` (after `pnpm build`): lint every published package of packages/, plugins/
// and examples/ the way a user will receive it. For each non-private package:
//
// - publint, strict, on the files `pnpm pack` would publish. Any message fails, suggestions
//   included: the few there are (e.g. a `git+https:` repository URL) are cheap to follow, and a
//   rule we disagree with belongs in this file with a reason, not in a pile of ignored output.
// - `attw --pack <dir> --profile esm-only`: the types resolve for ESM consumers (node16 from ESM,
//   bundler) on every entry point in `exports`.
// - STYLE.md rule 9: `"type": "module"`, `exports`, `files`, `engines.node`, and a README with a
//   code example.
//
// Prints one line per package (and the reasons under a failing one), then a summary line. Exits
// non-zero when any package fails.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, relative } from 'node:path';
import { publint } from 'publint';
import { formatMessage } from 'publint/utils';

const root = new URL('../..', import.meta.url).pathname;
const groups = ['packages', 'plugins', 'examples'];
const attwBin = join(root, 'node_modules/.bin/attw');
// The resolution kinds `--profile esm-only` leaves out (attw's own table).
const ignoredByProfile = new Set(['node10', 'node16-cjs']);

const packages = groups.flatMap((group) => {
  const groupDir = join(root, group);
  if (!existsSync(groupDir)) return [];
  return readdirSync(groupDir, { withFileTypes: true })
    .filter(
      (entry) => entry.isDirectory() && existsSync(join(groupDir, entry.name, 'package.json')),
    )
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((entry) => {
      const dir = join(groupDir, entry.name);
      return { dir, pkg: JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) };
    })
    .filter(({ pkg }) => pkg.private !== true);
});

/** Run a command; resolves with its exit code and output, never rejects on a non-zero exit. */
function run(command, args, cwd) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function checkPublint({ dir, pkg }) {
  const { messages } = await publint({ pkgDir: dir, pack: 'pnpm', strict: true });
  return messages.map(
    (message) => `publint ${message.type}: ${formatMessage(message, pkg, { color: false })}`,
  );
}

async function checkAttw({ dir }) {
  const result = await run(
    attwBin,
    ['--pack', dir, '--profile', 'esm-only', '--format', 'json'],
    root,
  );
  let report;
  try {
    report = JSON.parse(result.stdout);
  } catch {
    return {
      entrypoints: [],
      problems: [`attw failed: ${(result.stderr || result.stdout).trim()}`],
    };
  }
  const entrypoints = Object.keys(report.analysis?.entrypoints ?? {});
  const problems = Object.values(report.problems ?? {})
    .flat()
    .filter((problem) => !ignoredByProfile.has(problem.resolutionKind))
    .map(
      (problem) =>
        `attw ${problem.kind}` +
        (problem.entrypoint ? ` at "${problem.entrypoint}"` : '') +
        (problem.resolutionKind ? ` (${problem.resolutionKind})` : ''),
    );
  if (result.code !== 0 && problems.length === 0) {
    problems.push(`attw exited with ${result.code}: ${result.stderr.trim()}`);
  }
  return { entrypoints, problems };
}

function checkRule9({ dir, pkg }) {
  const problems = [];
  if (pkg.type !== 'module') problems.push('package.json: "type" must be "module" (ESM only)');
  if (typeof pkg.exports !== 'object' || pkg.exports === null)
    problems.push('package.json: "exports" must map each entry point to { types, default }');
  if (!Array.isArray(pkg.files) || !pkg.files.includes('dist'))
    problems.push('package.json: "files" must list "dist"');
  if (typeof pkg.engines?.node !== 'string') problems.push('package.json: "engines.node" missing');
  const readme = join(dir, 'README.md');
  if (!existsSync(readme)) problems.push('README.md missing');
  else if (!/^```(ts|js|typescript|javascript)\b/m.test(readFileSync(readme, 'utf8')))
    problems.push('README.md has no ```ts or ```js example');
  return problems;
}

async function check(entry) {
  const [publintProblems, attw] = await Promise.all([checkPublint(entry), checkAttw(entry)]);
  return {
    ...entry,
    entrypoints: attw.entrypoints,
    problems: [...checkRule9(entry), ...publintProblems, ...attw.problems],
  };
}

/** Check the packages a few at a time (each one packs twice), reporting in a stable order. */
async function checkAll(entries) {
  const results = new Array(entries.length);
  let next = 0;
  const worker = async () => {
    while (next < entries.length) {
      const index = next++;
      results[index] = await check(entries[index]);
    }
  };
  const workers = Math.max(1, Math.min(availableParallelism(), 4));
  await Promise.all(Array.from({ length: workers }, worker));
  return results;
}

const missingBuild = packages.filter(({ dir }) => !existsSync(join(dir, 'dist')));
if (missingBuild.length > 0) {
  for (const { pkg } of missingBuild) console.log(`FAIL ${pkg.name}: no dist/ (run pnpm build)`);
  console.log(`check:packages: ${packages.length} packages, ${missingBuild.length} not built`);
  process.exit(1);
}

const started = performance.now();
const results = await checkAll(packages);
const nameWidth = Math.max(...results.map(({ pkg }) => pkg.name.length));
const dirWidth = Math.max(...results.map(({ dir }) => relative(root, dir).length));
for (const { dir, pkg, entrypoints, problems } of results) {
  const status = problems.length === 0 ? 'ok  ' : 'FAIL';
  const where = relative(root, dir).padEnd(dirWidth);
  console.log(
    `${status} ${pkg.name.padEnd(nameWidth)}  ${where}  exports: ${entrypoints.join(' ') || '-'}`,
  );
  for (const problem of problems) console.log(`       ${problem}`);
}
const failed = results.filter(({ problems }) => problems.length > 0).length;
const seconds = ((performance.now() - started) / 1000).toFixed(1);
console.log(
  `check:packages: ${results.length} packages, ${results.length - failed} ok, ${failed} failed ` +
    `(publint --strict, attw --profile esm-only; ${seconds} s)`,
);
process.exit(failed === 0 ? 0 : 1);
