// `npm create @liveupdate/handler`, proven the way a handler author meets it, outside the
// workspace: pack the starter and the packages a new handler needs as `pnpm publish` would, run
// the starter's bin from its tarball (npm exec, which is what npm create runs) into an empty
// folder with --from-tarballs, install the project with npm, then run its own build, tests
// (conformance, case table, fault injection, damaged handovers, rehearsal) and pack. Nothing may come from
// the workspace: the @liveupdate/* packages come from the tarballs, the rest from npm's registry
// (its local cache first).
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cleanEnv,
  packPackages,
  publishedPackages,
  run,
  temporaryProject,
  timed,
} from './pack-helpers.js';

/** The starter and what the project it writes installs: its dependencies and theirs. */
const NEEDED = [
  '@liveupdate/create-handler',
  '@liveupdate/core',
  '@liveupdate/fdt',
  '@liveupdate/kernel',
  '@liveupdate/machine',
  '@liveupdate/testkit',
];

/** vitest's JSON report, the fields the test reads. */
interface VitestReport {
  readonly numPassedTests: number;
  readonly numFailedTests: number;
  readonly numPendingTests: number;
  readonly numTodoTests: number;
  readonly testResults: { readonly name: string; readonly status: string }[];
}

describe('npm create @liveupdate/handler, from the packed starter, outside the workspace', () => {
  let workspace = '';
  let project = '';
  let report: VitestReport;
  let packedFiles: string[] = [];
  let installed: Record<string, { resolved?: string }> = {};
  const seconds: Record<string, string> = {};

  beforeAll(async () => {
    workspace = temporaryProject('liveupdate-create-handler-test-');
    const time = <T>(step: string, work: () => Promise<T>): Promise<T> =>
      timed(seconds, step, work);

    const tarballs = join(workspace, 'tarballs');
    mkdirSync(tarballs);
    const packages = publishedPackages().filter(({ name }) => NEEDED.includes(name));
    const packed = await time('pnpm pack', () => packPackages(packages, tarballs));
    const starter = packed.find(({ name }) => name === '@liveupdate/create-handler')!.tarball;

    await time('npm exec starter', () =>
      run(
        'npm',
        [
          'exec',
          '--yes',
          `--package=${join(tarballs, starter)}`,
          '--',
          'create-handler',
          'my-handler',
          '--from-tarballs',
          tarballs,
        ],
        { cwd: workspace, env: cleanEnv, timeout: 120_000 },
      ),
    );
    project = join(workspace, 'my-handler');
    const inProject = { cwd: project, env: cleanEnv };

    await time('npm install', () =>
      run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], {
        ...inProject,
        timeout: 300_000,
      }),
    );
    installed = (
      JSON.parse(readFileSync(join(project, 'package-lock.json'), 'utf8')) as {
        packages: Record<string, { resolved?: string }>;
      }
    ).packages;
    await time('npm run build', () =>
      run('npm', ['run', 'build'], { ...inProject, timeout: 120_000 }),
    );
    await time('npm run typecheck', () =>
      run('npm', ['run', 'typecheck'], { ...inProject, timeout: 120_000 }),
    );
    // npm test builds again (kernel workers import dist/), then runs vitest; the extra arguments
    // go to vitest, whose JSON report says what ran.
    await time('npm test', () =>
      run(
        'npm',
        ['test', '--', '--reporter=default', '--reporter=json', '--outputFile.json=report.json'],
        {
          ...inProject,
          timeout: 900_000,
        },
      ),
    );
    report = JSON.parse(readFileSync(join(project, 'report.json'), 'utf8')) as VitestReport;
    const { stdout } = await time('npm pack', () =>
      run('npm', ['pack', '--json'], { ...inProject, timeout: 120_000 }),
    );
    packedFiles = (JSON.parse(stdout) as { files: { path: string }[] }[])[0]!.files.map(
      ({ path }) => path,
    );
    console.log(
      `create-handler pack test: ${Object.entries(seconds)
        .map(([step, s]) => `${step} ${s} s`)
        .join(', ')}`,
    );
  }, 1_500_000);

  afterAll(() => {
    if (workspace) rmSync(workspace, { recursive: true, force: true });
  });

  it('writes the project from the starter tarball into an empty folder', () => {
    expect(readdirSync(workspace).sort()).toEqual(['my-handler', 'tarballs']);
    for (const file of [
      '.gitignore',
      '.changeset/config.json',
      'tsconfig.json',
      'vitest.config.ts',
    ]) {
      expect(existsSync(join(project, file)), file).toBe(true);
    }
  });

  it('installs every @liveupdate package the project needs from its tarball, one copy each', () => {
    const copies = Object.keys(installed).filter((path) => path.includes('@liveupdate/'));
    expect(copies.sort()).toEqual(
      NEEDED.filter((name) => name !== '@liveupdate/create-handler')
        .map((name) => `node_modules/${name}`)
        .sort(),
    );
    for (const path of copies)
      expect(installed[path]?.resolved, path).toMatch(/^file:\.\.\/tarballs\//);
  });

  it('passes its own tests: conformance, case table, fault injection, damaged handovers, rehearsal', () => {
    expect(report.numFailedTests).toBe(0);
    expect(report.numPendingTests + report.numTodoTests).toBe(0);
    expect(report.numPassedTests).toBeGreaterThanOrEqual(25);
    const files = report.testResults.map(({ name }) => name.slice(project.length + 1)).sort();
    expect(files).toEqual([
      'src/value-luo-abi.test.ts',
      'test/conformance.test.ts',
      'test/damaged-handover.test.ts',
      'test/fault-injection.test.ts',
      'test/handler-cases.test.ts',
      'test/rehearsal.test.ts',
    ]);
    expect(report.testResults.every(({ status }) => status === 'passed')).toBe(true);
  });

  it('packs its built module without its tests', () => {
    expect(packedFiles).toContain('dist/index.js');
    expect(packedFiles).toContain('dist/index.d.ts');
    expect(packedFiles).toContain('package.json');
    expect(packedFiles.filter((path) => /test/.test(path))).toEqual([]);
    expect(packedFiles.filter((path) => path.startsWith('src/'))).toEqual([]);
  });
});
