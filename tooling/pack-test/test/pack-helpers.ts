// What the pack tests share: the published packages of the workspace, packing them as
// `pnpm publish` would, and an environment for npm and node that points nowhere into the
// workspace.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const run = promisify(execFile);
export const root = fileURLToPath(new URL('../../..', import.meta.url));

export interface PublishedPackage {
  readonly name: string;
  readonly dir: string;
}

/** Every non-private package of packages/, plugins/ and examples/: what gets published. */
export function publishedPackages(): PublishedPackage[] {
  return ['packages', 'plugins', 'examples'].flatMap((group) => {
    const groupDir = join(root, group);
    if (!existsSync(groupDir)) return [];
    return readdirSync(groupDir, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => join(groupDir, entry.name))
      .filter((dir) => existsSync(join(dir, 'package.json')))
      .map((dir) => ({
        dir,
        pkg: JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
          name: string;
          private?: boolean;
        },
      }))
      .filter(({ pkg }) => pkg.private !== true)
      .map(({ dir, pkg }) => ({ name: pkg.name, dir }));
  });
}

/**
 * The environment for npm and node in a temporary project: without the npm_/pnpm_ variables
 * pnpm sets for scripts, the VITEST* variables of the vitest running this test (a vitest started
 * there would take them for its own), and NODE_PATH/NODE_OPTIONS, so that nothing points back
 * into the workspace.
 */
export const cleanEnv = Object.fromEntries(
  Object.entries(process.env).filter(
    ([key]) =>
      !/^(npm_|pnpm_|VITEST)/i.test(key) &&
      !['NODE_PATH', 'NODE_OPTIONS', 'INIT_CWD'].includes(key),
  ),
);

/** A new folder in the OS temporary directory, refused when that is inside the workspace. */
export function temporaryProject(prefix: string): string {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), prefix)));
  if (!relative(realpathSync(root), dir).startsWith('..')) {
    throw new Error(`the temporary directory ${dir} is inside the workspace; set TMPDIR`);
  }
  return dir;
}

/** `pnpm pack` each package into `destination`; resolves with each one's tarball file name. */
export function packPackages(
  packages: readonly PublishedPackage[],
  destination: string,
): Promise<{ name: string; tarball: string }[]> {
  return Promise.all(
    packages.map(async ({ name, dir }) => {
      const { stdout } = await run('pnpm', ['pack', '--pack-destination', destination, '--json'], {
        cwd: dir,
      });
      // A package's `prepack` (tooling/scripts/ship-docs.mjs) has pnpm echo the script's name
      // first; the JSON report is the rest, from its opening line on.
      const report = stdout.slice(stdout.search(/^\{$/m));
      return { name, tarball: basename((JSON.parse(report) as { filename: string }).filename) };
    }),
  );
}

/** Time `work`, storing its seconds (one decimal) under `step`. */
export async function timed<T>(
  seconds: Record<string, string>,
  step: string,
  work: () => Promise<T>,
): Promise<T> {
  const started = performance.now();
  const value = await work();
  seconds[step] = ((performance.now() - started) / 1000).toFixed(1);
  return value;
}
