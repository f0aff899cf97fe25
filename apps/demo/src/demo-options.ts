import { parseArgs } from 'node:util';

/** The command line of `pnpm demo`. */
export interface DemoOptions {
  /** Size of the cache's memfd, in MiB. */
  readonly mib: number;
  readonly keys: number;
  /** Size of the VM's guest RAM (a sealed memfd), in MiB. */
  readonly guestMib: number;
  /** Live updates in a row: 6.18.0 → 6.18.1 → … → 6.18.`updates`. */
  readonly updates: number;
  /** Print only the JSON report. */
  readonly json: boolean;
  readonly help: boolean;
}

export const DEMO_USAGE = `usage: pnpm demo [--mib N] [--keys N] [--guest-mib N] [--updates N] [--json]

  --mib N        size of the cache's memfd in MiB (default 256)
  --keys N       keys in the cache (default 1000000)
  --guest-mib N  size of the VM's guest RAM in MiB (default 256)
  --updates N    live updates in a row, 6.18.0 → 6.18.1 → … (default 1)
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
      mib: { type: 'string', default: '256' },
      keys: { type: 'string', default: '1000000' },
      'guest-mib': { type: 'string', default: '256' },
      updates: { type: 'string', default: '1' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  return {
    mib: positiveInteger('--mib', values.mib),
    keys: positiveInteger('--keys', values.keys),
    guestMib: positiveInteger('--guest-mib', values['guest-mib']),
    updates: positiveInteger('--updates', values.updates),
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
