#!/usr/bin/env node
// `pnpm fuzz`: damaged live updates, counted per family of damage. See README.md.
import { parseArgs } from 'node:util';
import { FAILING_OUTCOMES, runFuzz, tally } from './fuzz-run.js';
import { OUTCOMES, fuzzUpdate } from './fuzz-update.js';
import { MUTATION_FAMILIES } from './mutation-families.js';

const USAGE = `usage: pnpm fuzz [--updates N] [--seed N] [--jobs N] [--families a,b] [--reseal] [--state FILE]
       pnpm fuzz --replay INDEX [--seed N] [--families a,b] [--reseal]

  --updates N     damaged live updates in the run (default 200)
  --seed N        the run's seed (default 1); the same seed gives the same damage
  --jobs N        updates at once, each on its own machine (default 2)
  --families a,b  only these families (default all): ${MUTATION_FAMILIES.map((f) => f.name).join(', ')}
  --reseal        recompute every checksum after each damage, so the checks behind them must catch it
  --state FILE    keep results in FILE after every update, and resume a run from it
  --replay INDEX  run update INDEX of the run alone and print its mutation, outcome and the new kernel's log`;

function fail(message: string): never {
  console.error(`fuzz: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function integer(name: string, text: string | undefined, fallback: number, min: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text)) fail(`--${name} must be a whole number, got "${text}"`);
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min)
    fail(`--${name} must be at least ${min}, got ${text}`);
  return value;
}

let parsed;
try {
  parsed = parseArgs({
    options: {
      updates: { type: 'string' },
      seed: { type: 'string' },
      jobs: { type: 'string' },
      families: { type: 'string' },
      state: { type: 'string' },
      replay: { type: 'string' },
      reseal: { type: 'boolean' },
      help: { type: 'boolean' },
    },
    strict: true,
  }).values;
} catch (error) {
  fail((error as Error).message);
}
if (parsed.help) {
  console.log(USAGE);
  process.exit(0);
}
const seed = integer('seed', parsed.seed, 1, 0);
const reseal = parsed.reseal ?? false;
const mode = reseal ? 'reseal mode' : 'checksums as written';
const families = parsed.families
  ? parsed.families.split(',').map((name) => {
      const family = MUTATION_FAMILIES.find((f) => f.name === name);
      return family ?? fail(`no family "${name}"`);
    })
  : MUTATION_FAMILIES;

if (parsed.replay !== undefined) {
  const index = integer('replay', parsed.replay, 0, 0);
  const family = families[index % families.length]!;
  const result = await fuzzUpdate({ seed, index, family, reseal, keepDmesg: true });
  console.log(`update ${index} (${family.name}, seed ${seed}, ${mode})`);
  console.log(`mutation: ${result.mutation ?? '(none)'}`);
  console.log(`outcome:  ${result.outcome}${result.detail ? `: ${result.detail}` : ''}`);
  if (result.dmesg) console.log(`\nthe new kernel's log:\n${result.dmesg}`);
  process.exit(FAILING_OUTCOMES.includes(result.outcome) ? 1 : 0);
}

const updates = integer('updates', parsed.updates, 200, 1);
const jobs = integer('jobs', parsed.jobs, 2, 1);
const started = Date.now();
const state = await runFuzz({
  seed,
  updates,
  families,
  jobs,
  reseal,
  ...(parsed.state ? { stateFile: parsed.state } : {}),
  onResult: (result, done) => {
    if (FAILING_OUTCOMES.includes(result.outcome)) {
      console.log(
        `  update ${result.index} (${result.family}): ${result.outcome}: ${result.mutation}: ${result.detail}`,
      );
    }
    if (done % 50 === 0 || done === updates) {
      console.log(`${done}/${updates} updates, ${((Date.now() - started) / 1000).toFixed(0)} s`);
    }
  },
});

const table = tally(state.results);
const header = ['family', 'updates', ...OUTCOMES];
const rows = [...table.entries()].map(([family, row]) => [
  family,
  String(OUTCOMES.reduce((sum, o) => sum + row[o], 0)),
  ...OUTCOMES.map((o) => String(row[o])),
]);
const totals = OUTCOMES.map((o) => state.results.filter((r) => r.outcome === o).length);
rows.push(['total', String(state.results.length), ...totals.map(String)]);
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (cells: string[]) =>
  cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
console.log(`\nseed ${seed}, ${state.results.length} damaged live updates, ${mode}`);
console.log(line(header));
for (const row of rows) console.log(line(row));
const failing = state.results.filter((r) => FAILING_OUTCOMES.includes(r.outcome));
for (const result of failing.slice(0, 20)) {
  console.log(
    `\n${result.outcome}: update ${result.index} (${result.family}): ${result.mutation}\n  ${result.detail}`,
  );
}
if (failing.length > 0) {
  console.log(
    `\nreplay one with: pnpm fuzz --replay INDEX --seed ${seed}${parsed.families ? ` --families ${parsed.families}` : ''}${reseal ? ' --reseal' : ''}`,
  );
}
console.log(
  `\n${failing.length === 0 ? 'PASS' : 'FAIL'}: ${FAILING_OUTCOMES.map((o) => `${state.results.filter((r) => r.outcome === o).length} ${o}`).join(', ')}`,
);
process.exit(failing.length === 0 ? 0 : 1);
