import { readFileSync } from 'node:fs';
import { StarterError } from './starter-error.js';

/** The `@liveupdate/*` packages a new handler package depends on at run time. */
export const RUNTIME_PACKAGES = [
  '@liveupdate/core',
  '@liveupdate/kernel',
  '@liveupdate/machine',
] as const;

/** The packages a new handler package needs only to build and test. */
export const DEVELOPMENT_PACKAGES = [
  '@liveupdate/testkit',
  '@changesets/cli',
  '@types/node',
  'typescript',
  'vite',
  'vitest',
] as const;

/** Every package the template names, each with the version range it gets. */
export type TemplateVersions = Readonly<
  Record<(typeof RUNTIME_PACKAGES)[number] | (typeof DEVELOPMENT_PACKAGES)[number], string>
>;

interface PackageJson {
  readonly devDependencies?: Readonly<Record<string, string>>;
  readonly version?: string;
}

const readJson = (url: URL): PackageJson => JSON.parse(readFileSync(url, 'utf8')) as PackageJson;

/**
 * The version ranges a new project gets, read from the starter's own `devDependencies`, so that
 * they are the ones this repository builds and tests the starter with and cannot drift from it.
 * Published, those ranges are plain (`pnpm pack` turns `workspace:^` into `^<version>`); run from
 * the repository, a `workspace:` range is turned the same way, with the version of the workspace
 * package installed beside the starter.
 */
export function templateVersions(
  starterPackageJson = new URL('../package.json', import.meta.url),
): TemplateVersions {
  const own = readJson(starterPackageJson).devDependencies ?? {};
  const entries = [...RUNTIME_PACKAGES, ...DEVELOPMENT_PACKAGES].map((name) => {
    const range = own[name];
    if (range === undefined) {
      throw new StarterError(`the starter's package.json has no devDependency on ${name}`, 1);
    }
    if (!range.startsWith('workspace:')) return [name, range];
    const installed = readJson(
      new URL(`node_modules/${name}/package.json`, starterPackageJson),
    ).version;
    const kind = range.slice('workspace:'.length);
    if (installed === undefined || !['^', '~', '*'].includes(kind)) {
      throw new StarterError(`cannot turn ${name}@${range} into a version range`, 1);
    }
    return [name, kind === '*' ? installed : `${kind}${installed}`];
  });
  return Object.fromEntries(entries) as TemplateVersions;
}
