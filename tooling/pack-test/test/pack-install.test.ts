// The published form, not the workspace form: pack every published package with `pnpm pack` (as
// `pnpm publish` would), install the tarballs with npm into a fresh project in the OS temp
// directory, and run a live update there (test/fixtures/live-update.mjs). Nothing may come from
// the workspace: the project sits outside it, the tarballs' dependencies on each other are pinned
// to the tarballs with npm `overrides` (the packages are not on the registry), and the fixture
// reports where every package resolved from.
import {
  copyFileSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cleanEnv,
  packPackages,
  publishedPackages,
  run,
  temporaryProject,
  timed,
} from './pack-helpers.js';

const fixture = fileURLToPath(new URL('./fixtures/live-update.mjs', import.meta.url));
const ownDependencies = Object.keys(
  (
    JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      dependencies: Record<string, string>;
    }
  ).dependencies,
).sort();

interface FixtureResult {
  readonly project: string;
  readonly versions: string[];
  readonly resolved: Record<string, string>;
  readonly memfd: { sent: string; received: string; bytes: number };
  readonly ringbuf: {
    consumedBefore: string;
    sent: string[];
    received: string[];
    liveUpdates: number;
  };
}

const isInside = (dir: string, path: string): boolean => {
  const rel = relative(dir, path);
  return rel !== '' && !rel.startsWith('..') && !rel.startsWith('/');
};

describe('the packed packages, installed with npm outside the workspace', () => {
  const packages = publishedPackages();
  let project = '';
  let result: FixtureResult;
  const seconds: Record<string, string> = {};

  beforeAll(async () => {
    project = temporaryProject('liveupdate-pack-test-');
    const time = <T>(step: string, work: () => Promise<T>): Promise<T> =>
      timed(seconds, step, work);

    const tarballs = join(project, 'tarballs');
    mkdirSync(tarballs);
    const packed = await time('pnpm pack', () => packPackages(packages, tarballs));

    const dependencies = Object.fromEntries(
      packed.map(({ name, tarball }) => [name, `file:tarballs/${tarball}`]),
    );
    // "$name" pins every occurrence of the package, at any depth, to the root's tarball.
    const overrides = Object.fromEntries(packed.map(({ name }) => [name, `$${name}`]));
    writeFileSync(
      join(project, 'package.json'),
      `${JSON.stringify(
        { name: 'pack-test-project', private: true, type: 'module', dependencies, overrides },
        null,
        2,
      )}\n`,
    );
    copyFileSync(fixture, join(project, 'live-update.mjs'));

    await time('npm install', () =>
      run('npm', ['install', '--no-audit', '--no-fund'], {
        cwd: project,
        env: cleanEnv,
        timeout: 120_000,
      }),
    );
    const { stdout } = await time('live update', () =>
      run(process.execPath, ['live-update.mjs'], { cwd: project, env: cleanEnv, timeout: 60_000 }),
    );
    result = JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as FixtureResult;
    console.log(
      `pack test: ${packages.length} packages packed in ${seconds['pnpm pack']} s, ` +
        `npm install ${seconds['npm install']} s, live update ${seconds['live update']} s`,
    );
  }, 180_000);

  afterAll(() => {
    if (project) rmSync(project, { recursive: true, force: true });
  });

  it('lists every published package as a dependency, so that turbo builds them first', () => {
    expect(ownDependencies).toEqual(packages.map(({ name }) => name).sort());
  });

  it('installs every package from its tarball', () => {
    const lock = JSON.parse(readFileSync(join(project, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { resolved?: string }>;
    };
    for (const { name } of packages) {
      expect(lock.packages[`node_modules/${name}`]?.resolved).toMatch(/^file:tarballs\//);
    }
    // One copy of each: the overrides kept npm from nesting a registry copy anywhere.
    const copies = Object.keys(lock.packages).filter((path) => path.includes('@liveupdate/'));
    expect(copies.sort()).toEqual(packages.map(({ name }) => `node_modules/${name}`).sort());
  });

  it('resolves every package and its dependencies from inside the temporary project', () => {
    expect(result.project).toBe(project);
    expect(Object.keys(result.resolved).length).toBeGreaterThan(0);
    for (const [specifier, path] of Object.entries(result.resolved)) {
      expect(isInside(join(project, 'node_modules'), realpathSync(path)), specifier).toBe(true);
    }
  });

  it('live-updates the kernel with a memfd whose bytes arrive intact', () => {
    expect(result.versions).toEqual(['6.18.0', '6.18.1']);
    expect(result.memfd.bytes).toBe(3 * 4096 + 2048);
    expect(result.memfd.received).toBe(result.memfd.sent);
  });

  it('carries the unread records of the example ring buffer across the same live update', () => {
    expect(result.ringbuf.consumedBefore).toBe('01');
    expect(result.ringbuf.sent.map((record) => record.length / 2)).toEqual([7, 100, 1000, 3000]);
    expect(result.ringbuf.received).toEqual(result.ringbuf.sent);
    expect(result.ringbuf.liveUpdates).toBe(1);
  });
});
