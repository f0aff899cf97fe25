#!/usr/bin/env node
// `pnpm bench` (after turbo has built every package): run each `bench/*.bench.mjs` of packages/*,
// plugins/* and apps/*, one after another so they do not compete for the CPU, with the package as
// working directory. Benchmarks print their own figures; this exits non-zero if any of them failed.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('../..', import.meta.url).pathname;
const groups = ['packages', 'plugins', 'apps'];

const benches = groups.flatMap((group) => {
  const groupDir = join(root, group);
  if (!existsSync(groupDir)) return [];
  return readdirSync(groupDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .sort((a, b) => a.name.localeCompare(b.name))
    .flatMap((entry) => {
      const packageDir = join(groupDir, entry.name);
      const benchDir = join(packageDir, 'bench');
      if (!existsSync(benchDir)) return [];
      return readdirSync(benchDir)
        .filter((name) => name.endsWith('.bench.mjs'))
        .sort()
        .map((name) => ({ packageDir, file: join(benchDir, name) }));
    });
});

if (benches.length === 0) {
  console.log('no bench/*.bench.mjs files found');
  process.exit(0);
}

const failed = [];
for (const { packageDir, file } of benches) {
  const name = relative(root, file);
  console.log(`\n=== ${name}`);
  const started = performance.now();
  const run = spawnSync(process.execPath, [file], { cwd: packageDir, stdio: 'inherit' });
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  if (run.status === 0) {
    console.log(`=== ${name}: done in ${seconds} s`);
  } else {
    const why =
      run.error?.message ?? (run.signal ? `signal ${run.signal}` : `exit code ${run.status}`);
    console.log(`=== ${name}: FAILED (${why}) after ${seconds} s`);
    failed.push(name);
  }
}

console.log('');
console.log(`benches: ${benches.length - failed.length} ok, ${failed.length} failed`);
if (failed.length > 0) {
  for (const name of failed) console.log(`  failed: ${name}`);
  process.exit(1);
}
