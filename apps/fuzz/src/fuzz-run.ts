import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { fuzzUpdate, OUTCOMES, type Outcome, type UpdateResult } from './fuzz-update.js';
import type { MutationFamily } from './mutation-families.js';

/** What a run keeps between invocations: its settings and every result so far. */
export interface FuzzState {
  readonly version: 1;
  readonly seed: number;
  readonly families: readonly string[];
  /** Reseal mode: every checksum recomputed after the damage (absent in older state files). */
  readonly reseal?: boolean;
  readonly results: UpdateResult[];
}

export interface FuzzRunOptions {
  readonly seed: number;
  /** Updates in the whole run (a resumed run continues up to this number). */
  readonly updates: number;
  readonly families: readonly MutationFamily[];
  /** Recompute every checksum after each damage (see `FuzzUpdateOptions.reseal`). */
  readonly reseal?: boolean;
  /** Updates running at once, each on its own machine. */
  readonly jobs: number;
  /** A file to keep the state in after every update, and to resume from. */
  readonly stateFile?: string;
  readonly onResult?: (result: UpdateResult, done: number) => void;
}

/**
 * Run `updates` damaged live updates, update `i` with family `i mod families` and its own seed,
 * so that any of them can be replayed alone and a run can be resumed where it stopped.
 */
export async function runFuzz(options: FuzzRunOptions): Promise<FuzzState> {
  const names = options.families.map((f) => f.name);
  const reseal = options.reseal ?? false;
  const state: FuzzState = loadState(options.stateFile) ?? {
    version: 1,
    seed: options.seed,
    families: names,
    reseal,
    results: [],
  };
  if (
    state.seed !== options.seed ||
    state.families.join() !== names.join() ||
    (state.reseal ?? false) !== reseal
  ) {
    throw new Error(
      `${options.stateFile} is a run with seed ${state.seed}, families ${state.families.join(',')}` +
        `${state.reseal ? ' and --reseal' : ''}; ` +
        'resume it with the same settings or choose another --state file',
    );
  }
  const done = new Set(state.results.map((r) => r.index));
  const pending = Array.from({ length: options.updates }, (_, i) => i).filter((i) => !done.has(i));
  let next = 0;
  const worker = async () => {
    while (next < pending.length) {
      const index = pending[next++]!;
      const family = options.families[index % options.families.length]!;
      const result = await fuzzUpdate({ seed: options.seed, index, family, reseal });
      state.results.push(result);
      if (options.stateFile) saveState(options.stateFile, state);
      options.onResult?.(result, state.results.length);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.jobs) }, worker));
  state.results.sort((a, b) => a.index - b.index);
  if (options.stateFile) saveState(options.stateFile, state);
  return state;
}

function loadState(file: string | undefined): FuzzState | undefined {
  if (!file || !existsSync(file)) return undefined;
  const state = JSON.parse(readFileSync(file, 'utf8')) as FuzzState;
  if (state.version !== 1 || !Array.isArray(state.results)) {
    throw new Error(`${file} is not a fuzz state file`);
  }
  return state;
}

function saveState(file: string, state: FuzzState): void {
  writeFileSync(`${file}.tmp`, JSON.stringify(state));
  renameSync(`${file}.tmp`, file);
}

/** Outcomes counted per family, in {@link OUTCOMES} order. */
export function tally(results: readonly UpdateResult[]): Map<string, Record<Outcome, number>> {
  const table = new Map<string, Record<Outcome, number>>();
  for (const result of results) {
    let row = table.get(result.family);
    if (!row) {
      row = Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as Record<Outcome, number>;
      table.set(result.family, row);
    }
    row[result.outcome]++;
  }
  return table;
}

/** The outcomes a run must never have. */
export const FAILING_OUTCOMES: readonly Outcome[] = ['silent-misread', 'hang', 'host-failure'];
