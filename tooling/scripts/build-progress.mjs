#!/usr/bin/env node
// `pnpm demo`'s build: `turbo run build`, saying "building @liveupdate/x…" as each package starts
// building instead of minutes of silence on a fresh clone, and one line at the end. Up-to-date
// packages are counted, not listed. A build's own output (tsc prints only errors) is passed on as
// it comes; turbo's banner and summary only when the build failed, for its reason. Everything goes
// to stderr: the demo's stdout is its output (`--json` prints the report alone). Extra arguments
// go to turbo (e.g. `--filter=@liveupdate/demo...`).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

const root = new URL('../..', import.meta.url).pathname;
const turbo = spawn(
  'pnpm',
  [
    'exec',
    'turbo',
    'run',
    'build',
    '--output-logs=new-only',
    '--no-color',
    ...process.argv.slice(2),
  ],
  {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { TURBO_TELEMETRY_DISABLED: '1', ...process.env },
  },
);

const TASK_LINE = /^(\S+):build: ?(.*)$/;
let built = 0;
let upToDate = 0;
/** Turbo's own lines (banner, summary, errors), shown only on a failure. */
const turboLines = [];

function onLine(line) {
  const task = TASK_LINE.exec(line);
  if (!task) {
    if (line.trim() !== '') turboLines.push(line);
    return;
  }
  const [, name, text] = task;
  if (/^cache miss, executing/.test(text)) {
    built += 1;
    console.error(`building ${name}…`);
  } else if (/^cache hit/.test(text)) {
    upToDate += 1;
  } else if (text.trim() !== '' && !text.startsWith('> ')) {
    // pnpm's "> pkg build" echo is left out; anything else is the build speaking: an error.
    console.error(`${name}: ${text}`);
  }
}

createInterface({ input: turbo.stdout }).on('line', onLine);
createInterface({ input: turbo.stderr }).on('line', onLine);
turbo.on('close', (code, signal) => {
  if (code === 0) {
    console.error(`built ${built} package${built === 1 ? '' : 's'}, ${upToDate} up to date`);
  } else {
    for (const line of turboLines) console.error(line);
    console.error(`the build failed (turbo ${signal ?? `exit code ${code}`})`);
  }
  process.exitCode = code ?? 1;
});
