import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  DEVELOPMENT_PACKAGES,
  RUNTIME_PACKAGES,
  createHandlerProject,
  runStarter,
  templateVersions,
} from '@liveupdate/create-handler';

const starterPackageJson = JSON.parse(
  readFileSync(new URL('../package.json', import.meta.url), 'utf8'),
) as { devDependencies: Record<string, string> };
/** The version of a workspace package installed beside the starter. */
const installedVersion = (name: string): string =>
  (
    JSON.parse(
      readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url), 'utf8'),
    ) as { version: string }
  ).version;

let cwd = '';
beforeEach(() => {
  cwd = mkdtempSync(join(tmpdir(), 'create-handler-test-'));
});
afterEach(() => {
  rmSync(cwd, { recursive: true, force: true });
});

const readJson = (path: string): Record<string, unknown> =>
  JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;

/** Run the command, collecting what it prints. */
function starter(...args: string[]): { code: number; out: string; error: string } {
  let out = '';
  let error = '';
  const code = runStarter(args, cwd, {
    out: (text) => (out += `${text}\n`),
    error: (text) => (error += `${text}\n`),
  });
  return { code, out, error };
}

describe('createHandlerProject', () => {
  it('writes the package, its configuration, sources, tests, README, changeset setup and .gitignore', () => {
    const { dir, files } = createHandlerProject({ packageName: 'my-handler', cwd });
    expect(dir).toBe(join(cwd, 'my-handler'));
    expect(files).toEqual([
      '.changeset/README.md',
      '.changeset/config.json',
      '.gitignore',
      'README.md',
      'package.json',
      'src/index.ts',
      'src/value-file-operations.ts',
      'src/value-luo-abi.test.ts',
      'src/value-luo-abi.ts',
      'src/value-luo-handler.ts',
      'src/value-module.ts',
      'src/value-page.ts',
      'src/value-rehearsal.ts',
      'test/conformance.test.ts',
      'test/damaged-handover.test.ts',
      'test/fault-injection.test.ts',
      'test/handler-cases.test.ts',
      'test/helpers.ts',
      'test/rehearsal.test.ts',
      'tsconfig.build.json',
      'tsconfig.json',
      'vitest.config.ts',
    ]);
    for (const file of files)
      expect(readFileSync(join(dir, file), 'utf8')).not.toMatch(/__[A-Z_]+__/);
  });

  it('names the device, the handler, the module and the kernel image entry after the package', () => {
    const { dir } = createHandlerProject({ packageName: '@acme/kv-store', cwd });
    expect(dir).toBe(join(cwd, 'kv-store'));
    const read = (file: string): string => readFileSync(join(dir, file), 'utf8');
    expect(readJson(join(dir, 'package.json')).name).toBe('@acme/kv-store');
    expect(read('src/value-file-operations.ts')).toContain("VALUE_DEVICE_PATH = '/dev/kv-store'");
    expect(read('src/value-luo-abi.ts')).toContain("VALUE_LUO_COMPATIBLE = 'kv-store-v1'");
    expect(read('src/value-module.ts')).toContain("name: 'kv-store'");
    expect(read('test/helpers.ts')).toContain("MODULE = '@acme/kv-store'");
  });

  it('sets vitest test and hook timeouts of 120 s', () => {
    const { dir } = createHandlerProject({ packageName: 'my-handler', cwd });
    const config = readFileSync(join(dir, 'vitest.config.ts'), 'utf8');
    expect(config).toContain('testTimeout: 120_000');
    expect(config).toContain('hookTimeout: 120_000');
  });

  it('gives the project the versions the starter itself is built and tested with', () => {
    const { dir } = createHandlerProject({ packageName: 'my-handler', cwd });
    const pkg = readJson(join(dir, 'package.json')) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
      overrides?: unknown;
    };
    const expected = (name: string): string => {
      const range = starterPackageJson.devDependencies[name]!;
      // In this repository the starter's own ranges are workspace: ranges; pnpm pack turns them
      // into ^<version>, and so does the starter.
      return range === 'workspace:^' ? `^${installedVersion(name)}` : range;
    };
    expect(Object.keys(pkg.dependencies)).toEqual([...RUNTIME_PACKAGES].sort());
    expect(Object.keys(pkg.devDependencies)).toEqual([...DEVELOPMENT_PACKAGES].sort());
    for (const [name, range] of Object.entries({ ...pkg.dependencies, ...pkg.devDependencies })) {
      expect(range, name).toBe(expected(name));
    }
    expect(pkg.devDependencies.vitest).toMatch(/^\d+\.\d+\.\d+$/);
    expect(pkg.overrides).toBeUndefined();
  });

  it('reads the versions from the package.json it is given, plain ranges as they are', () => {
    const fake = join(cwd, 'package.json');
    const devDependencies = Object.fromEntries(
      [...RUNTIME_PACKAGES, ...DEVELOPMENT_PACKAGES].map((name, i) => [name, `^${i + 1}.0.0`]),
    );
    writeFileSync(fake, JSON.stringify({ devDependencies }));
    expect(templateVersions(new URL(`file://${fake}`))).toEqual(devDependencies);
  });

  it('depends on the tarballs of a folder with --from-tarballs, pinned at any depth', () => {
    const tarballs = join(cwd, 'tarballs');
    mkdirSync(tarballs);
    for (const name of ['core', 'kernel', 'machine', 'testkit', 'fdt', 'plugin-memfd']) {
      writeFileSync(join(tarballs, `liveupdate-${name}-1.2.3.tgz`), '');
    }
    writeFileSync(join(tarballs, 'unrelated-1.0.0.tgz'), '');
    const { dir } = createHandlerProject({
      packageName: 'my-handler',
      cwd,
      fromTarballs: 'tarballs',
    });
    const pkg = readJson(join(dir, 'package.json')) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
      overrides: Record<string, string>;
    };
    expect(pkg.dependencies).toEqual({
      '@liveupdate/core': 'file:../tarballs/liveupdate-core-1.2.3.tgz',
      '@liveupdate/kernel': 'file:../tarballs/liveupdate-kernel-1.2.3.tgz',
      '@liveupdate/machine': 'file:../tarballs/liveupdate-machine-1.2.3.tgz',
    });
    expect(pkg.devDependencies['@liveupdate/testkit']).toBe(
      'file:../tarballs/liveupdate-testkit-1.2.3.tgz',
    );
    expect(pkg.overrides).toEqual({
      '@liveupdate/core': '$@liveupdate/core',
      '@liveupdate/fdt': 'file:../tarballs/liveupdate-fdt-1.2.3.tgz',
      '@liveupdate/kernel': '$@liveupdate/kernel',
      '@liveupdate/machine': '$@liveupdate/machine',
      '@liveupdate/plugin-memfd': 'file:../tarballs/liveupdate-plugin-memfd-1.2.3.tgz',
      '@liveupdate/testkit': '$@liveupdate/testkit',
    });
  });
});

describe('the create-handler command', () => {
  it('writes the project into <name> and says what to run next', () => {
    const { code, out, error } = starter('my-handler');
    expect({ code, error }).toEqual({ code: 0, error: '' });
    expect(out).toContain(`cd ${join(cwd, 'my-handler')}`);
    expect(out).toContain('npm test');
    expect(readdirSync(join(cwd, 'my-handler'))).toContain('package.json');
  });

  it('writes into an empty folder that already exists', () => {
    mkdirSync(join(cwd, 'my-handler'));
    expect(starter('my-handler').code).toBe(0);
  });

  it('refuses a folder that is not empty with exit code 1, and writes nothing', () => {
    mkdirSync(join(cwd, 'my-handler'));
    writeFileSync(join(cwd, 'my-handler', 'notes.txt'), 'mine');
    const { code, error } = starter('my-handler');
    expect(code).toBe(1);
    expect(error).toContain(`${join(cwd, 'my-handler')} is not empty`);
    expect(readdirSync(join(cwd, 'my-handler'))).toEqual(['notes.txt']);
  });

  it('refuses a tarball folder without the packages the project needs, with exit code 1', () => {
    mkdirSync(join(cwd, 'tarballs'));
    writeFileSync(join(cwd, 'tarballs', 'liveupdate-core-0.0.0.tgz'), '');
    const { code, error } = starter('my-handler', '--from-tarballs', 'tarballs');
    expect(code).toBe(1);
    expect(error).toContain(
      'has no tarball of @liveupdate/kernel, @liveupdate/machine, @liveupdate/testkit',
    );
    expect(readdirSync(cwd)).toEqual(['tarballs']);
  });

  it.each([
    ['', 'it is empty'],
    ['My-Handler', 'it has capital letters'],
    ['.hidden', 'starts with "."'],
    ['_private', 'starts with "_"'],
    ['my handler', 'is not URL-safe'],
    ['fs', 'the name of a Node built-in module'],
    ['node_modules', 'npm reserves it'],
    ['my.handler', 'allow only a-z, 0-9, "-" and "_"'],
    ['@scope/', 'is not URL-safe'],
    ['x'.repeat(45), 'longer than a compatible'],
    ['x'.repeat(215), 'longer than 214'],
  ])('refuses the name %j with exit code 2: %s', (name, why) => {
    const { code, error } = starter(name);
    expect(code).toBe(2);
    expect(error).toContain(`${JSON.stringify(name)} is not a valid package name: `);
    expect(error).toContain(why);
    expect(readdirSync(cwd)).toEqual([]);
  });

  it('accepts the longest name whose compatible fits, and a scoped name', () => {
    expect(starter('x'.repeat(44)).code).toBe(0);
    expect(starter('@my-org/handler_2').code).toBe(0);
    expect(readdirSync(cwd).sort()).toEqual(['handler_2', 'x'.repeat(44)]);
  });

  it('refuses a missing name, two names and an unknown option with exit code 2 and the usage', () => {
    for (const args of [[], ['a', 'b'], ['a', '--force']]) {
      expect(starter(...args).code, args.join(' ')).toBe(2);
    }
    expect(starter().error).toContain('the package name is missing');
    expect(starter('a', 'b').error).toContain('one package name, not 2: b');
    expect(starter('a', '--force').error).toContain("Unknown option '--force'");
    expect(starter('a', '--force').error).toContain('Usage: npm create @liveupdate/handler');
    expect(readdirSync(cwd)).toEqual([]);
  });

  it('prints the usage for --help and -h, and writes nothing', () => {
    for (const flag of ['--help', '-h']) {
      const { code, out } = starter(flag);
      expect(code).toBe(0);
      expect(out).toContain('Usage: npm create @liveupdate/handler <name>');
      expect(out).toContain('--from-tarballs <dir>');
    }
    expect(readdirSync(cwd)).toEqual([]);
  });
});
