import { parseArgs } from 'node:util';

/** The demo's scenarios: the same kernel build updated, or kernels that differ (issue 11). */
export const DEMO_SCENARIOS = ['same', 'skew'] as const;
export type DemoScenario = (typeof DEMO_SCENARIOS)[number];

/** The command line of `pnpm demo`. */
export interface DemoOptions {
  readonly scenario: DemoScenario;
  /** Size of the cache's memfd, in MiB. */
  readonly mib: number;
  readonly keys: number;
  /** Size of the VM's guest RAM (a sealed memfd), in MiB. */
  readonly guestMib: number;
  /** Live updates in a row: 6.18.0 → 6.18.1 → … → 6.18.`updates` (scenario `same` only). */
  readonly updates: number;
  /** Print only the JSON report. */
  readonly json: boolean;
  /** Print one row per update, their medians and the verdict, instead of the story. */
  readonly quiet: boolean;
  /** Explain each term (KHO, LUO, …) in one line where it first appears. */
  readonly explain: boolean;
  /** Where to write a Chrome trace of the run, or `null` for none. */
  readonly trace: string | null;
  /** Where to write the HTML report of the run, or `null` for none. */
  readonly report: string | null;
  /**
   * The cache also serves memcached on 127.0.0.1, and host-side clients (npm `memcache-client`,
   * Debian's libmemcached-tools) drive it before, during and after the live update(s).
   */
  readonly memcached: boolean;
  readonly help: boolean;
}

/**
 * Bounds of the numeric options. Node 20 allows a typed array of at most 4 GiB, and the machine's
 * RAM is one: the cache and guest RAM share it with 1 GiB for the kernels, so together they take
 * at most 3 GiB. 2048 MiB of 16-byte slots at load 0.75 hold about 100 million keys.
 * Each update boots a kernel and checks every key, so 100 already takes minutes.
 */
export const DEMO_LIMITS = {
  mib: { min: 1, max: 2048 },
  guestMib: { min: 1, max: 2048 },
  /** `--mib` + `--guest-mib`. */
  sharedMib: 3072,
  keys: { min: 1, max: 100_000_000 },
  updates: { min: 1, max: 100 },
} as const;

export const DEMO_USAGE = `usage: pnpm demo [--scenario same|skew] [--mib N] [--keys N] [--guest-mib N] [--updates N] [--memcached] [--quiet | --json] [--explain] [--trace FILE] [--report FILE.html]

  --scenario S   same: the same kernel build, 6.18.0 → 6.18.1 → … (default);
                 skew: 6.18.0 (memfd-v2) → 6.19.0 (memfd-v3) → back to 6.18.0 → a kernel
                 without vfio-pci, which is refused before the blackout
  --mib N        size of the cache's memfd in MiB, 1 to 2048 (default 256)
  --keys N       keys in the cache, 1 to 100000000 (default 1000000)
  --guest-mib N  size of the VM's guest RAM in MiB, 1 to 2048 (default 256);
                 --mib and --guest-mib together at most 3072
  --updates N    live updates in a row, 6.18.0 → 6.18.1 → …, 1 to 100 (default 1; scenario same only)
  --memcached    the cache also serves memcached on 127.0.0.1 from its memfd; memcache-client
                 (npm) and Debian's memcslap, memccp and memccat drive it before, during and
                 after the update(s); reports requests, client errors, the outage, wrong values
                 and lost writes (docs/memcached.md)
  --quiet        print only a row per update, their medians and the verdict
  --json         print only the report, as JSON (not with --quiet: one output or the other)
  --explain      explain each term (KHO, LUO, HWPT, …) in one line where it first appears
  --trace FILE   also write a Chrome trace of the run to FILE (open it in ui.perfetto.dev)
  --report FILE  also write the report as one HTML page to FILE: verdict, settings, a timeline
                 of each update, phases and checks; it opens offline in any browser
  --help         this text

The machine has 2 GiB of RAM (allocated lazily), more if the cache and the VM need it.`;

const VALUE_OPTIONS = [
  'scenario',
  'mib',
  'keys',
  'guest-mib',
  'updates',
  'trace',
  'report',
] as const;
const FLAG_OPTIONS = ['json', 'quiet', 'explain', 'memcached', 'help'] as const;
type ValueOption = (typeof VALUE_OPTIONS)[number];

/** A bad command line: its message is the demo's own, for the user. */
export class DemoOptionError extends Error {
  override readonly name = 'DemoOptionError';
}

/**
 * Parse the demo's arguments. A `--` among them is skipped, so `pnpm demo -- --json` works as well
 * as `pnpm demo --json`. Throws a {@link DemoOptionError} saying what is wrong in the demo's words.
 */
export function parseDemoOptions(argv: readonly string[]): DemoOptions {
  // Not strict: node's own messages ("argument is ambiguous" for `--updates -1`) are not the
  // demo's, so the tokens are checked here.
  const { tokens } = parseArgs({
    args: argv.filter((arg) => arg !== '--'),
    options: {
      ...Object.fromEntries(VALUE_OPTIONS.map((name) => [name, { type: 'string' as const }])),
      ...Object.fromEntries(FLAG_OPTIONS.map((name) => [name, { type: 'boolean' as const }])),
    },
    strict: false,
    tokens: true,
  });
  const values = new Map<ValueOption, string>();
  const flags = new Set<string>();
  for (const token of tokens) {
    if (token.kind === 'positional') {
      throw new DemoOptionError(
        `unexpected argument "${token.value}": every option starts with --`,
      );
    }
    if (token.kind !== 'option') continue;
    const name = VALUE_OPTIONS.find((option) => option === token.name);
    if (name) {
      if (token.value === undefined || token.value === '') {
        throw new DemoOptionError(`${token.rawName} needs a value`);
      }
      values.set(name, token.value);
    } else if (FLAG_OPTIONS.some((option) => option === token.name)) {
      if (token.value !== undefined) {
        throw new DemoOptionError(`${token.rawName} takes no value, not "${token.value}"`);
      }
      flags.add(token.name);
    } else {
      throw new DemoOptionError(`unknown option ${token.rawName}`);
    }
  }

  const scenarioText = values.get('scenario') ?? 'same';
  const scenario = DEMO_SCENARIOS.find((name) => name === scenarioText);
  if (!scenario) {
    throw new DemoOptionError(
      `--scenario must be ${DEMO_SCENARIOS.join(' or ')}, not "${scenarioText}"`,
    );
  }
  if (scenario !== 'same' && values.has('updates')) {
    throw new DemoOptionError(`--updates goes with --scenario same; ${scenario} has its own chain`);
  }
  if (flags.has('quiet') && flags.has('json')) {
    throw new DemoOptionError(
      '--quiet and --json are two outputs, a table or a report: choose one',
    );
  }
  const mib = wholeNumber('--mib', values.get('mib') ?? '256', DEMO_LIMITS.mib);
  const guestMib = wholeNumber(
    '--guest-mib',
    values.get('guest-mib') ?? '256',
    DEMO_LIMITS.guestMib,
  );
  if (mib + guestMib > DEMO_LIMITS.sharedMib) {
    throw new DemoOptionError(
      `--mib and --guest-mib must together be at most ${DEMO_LIMITS.sharedMib}, not ${mib} + ${guestMib}: ` +
        `the machine's RAM is at most 4 GiB, 1 GiB of it for the kernels`,
    );
  }
  return {
    scenario,
    mib,
    keys: wholeNumber('--keys', values.get('keys') ?? '1000000', DEMO_LIMITS.keys),
    guestMib,
    updates: wholeNumber('--updates', values.get('updates') ?? '1', DEMO_LIMITS.updates),
    json: flags.has('json'),
    quiet: flags.has('quiet'),
    explain: flags.has('explain'),
    trace: values.get('trace') ?? null,
    report: values.get('report') ?? null,
    memcached: flags.has('memcached'),
    help: flags.has('help'),
  };
}

/** A whole number in `[min, max]`; `_` may group digits (`1_000_000`). */
function wholeNumber(
  option: string,
  text: string,
  { min, max }: { readonly min: number; readonly max: number },
): number {
  const value = /^\d[\d_]*$/.test(text) ? Number(text.replaceAll('_', '')) : NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new DemoOptionError(
      `${option} must be a whole number from ${min.toLocaleString('en-US')} to ${max.toLocaleString('en-US')}, not "${text}"`,
    );
  }
  return value;
}
