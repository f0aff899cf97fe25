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
  readonly help: boolean;
}

export const DEMO_USAGE = `usage: pnpm demo [--scenario same|skew] [--mib N] [--keys N] [--guest-mib N] [--updates N] [--json]

  --scenario S   same: the same kernel build, 6.18.0 → 6.18.1 → … (default);
                 skew: 6.18.0 (memfd-v2) → 6.19.0 (memfd-v3) → back to 6.18.0 → a kernel
                 without vfio-pci, which is refused before the blackout
  --mib N        size of the cache's memfd in MiB (default 256)
  --keys N       keys in the cache (default 1000000)
  --guest-mib N  size of the VM's guest RAM in MiB (default 256)
  --updates N    live updates in a row, 6.18.0 → 6.18.1 → … (default 1; scenario same only)
  --json         print only the report, as JSON
  --help         this text

The machine has 2 GiB of RAM (allocated lazily), more if the cache and the VM need it.`;

/**
 * Parse the demo's arguments. A `--` among them is skipped, so `pnpm demo -- --json` works as well
 * as `pnpm demo --json`. Throws a `TypeError` naming the bad option.
 */
export function parseDemoOptions(argv: readonly string[]): DemoOptions {
  const { values } = parseArgs({
    args: argv.filter((arg) => arg !== '--'),
    options: {
      scenario: { type: 'string', default: 'same' },
      mib: { type: 'string', default: '256' },
      keys: { type: 'string', default: '1000000' },
      'guest-mib': { type: 'string', default: '256' },
      updates: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const scenario = DEMO_SCENARIOS.find((name) => name === values.scenario);
  if (!scenario) {
    throw new TypeError(
      `--scenario takes ${DEMO_SCENARIOS.join(' or ')}, not "${values.scenario}"`,
    );
  }
  if (scenario !== 'same' && values.updates !== undefined) {
    throw new TypeError(`--updates goes with --scenario same; ${scenario} has its own chain`);
  }
  return {
    scenario,
    mib: positiveInteger('--mib', values.mib),
    keys: positiveInteger('--keys', values.keys),
    guestMib: positiveInteger('--guest-mib', values['guest-mib']),
    updates: positiveInteger('--updates', values.updates ?? '1'),
    json: values.json,
    help: values.help,
  };
}

function positiveInteger(option: string, text: string): number {
  const value = Number(text.replaceAll('_', ''));
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new TypeError(`${option} takes a positive integer, not "${text}"`);
  }
  return value;
}
