import type { HandlerName } from './handler-name.js';
import type { TarballDependencies } from './tarball-dependencies.js';
import {
  DEVELOPMENT_PACKAGES,
  RUNTIME_PACKAGES,
  type TemplateVersions,
} from './template-versions.js';

/**
 * The new project's `package.json`: ESM only, `exports` with types first, `files`, `engines`, the
 * scripts `build`, `typecheck`, `test` (which builds first: kernel workers import the built
 * module) and `changeset`; the `@liveupdate/*` packages at `versions`, or as `file:` specs of
 * their tarballs with the `overrides` that keep npm from looking for them on the registry.
 */
export function handlerPackageJson(
  { packageName, name }: HandlerName,
  versions: TemplateVersions,
  tarballs?: TarballDependencies,
): Record<string, unknown> {
  const spec = (dependency: keyof TemplateVersions): string =>
    tarballs?.specs[dependency] ?? versions[dependency];
  const pick = (names: readonly (keyof TemplateVersions)[]): Record<string, string> =>
    Object.fromEntries([...names].sort().map((dependency) => [dependency, spec(dependency)]));
  return {
    name: packageName,
    version: '0.1.0',
    description: `A Live Update Orchestrator file handler: /dev/${name} files keep their value across a kernel live update (${name}-v1).`,
    type: 'module',
    exports: { '.': { types: './dist/index.d.ts', default: './dist/index.js' } },
    main: './dist/index.js',
    types: './dist/index.d.ts',
    files: ['dist', '!dist/**/*.test.*'],
    engines: { node: '>=20.19' },
    scripts: {
      build: 'tsc -p tsconfig.build.json',
      typecheck: 'tsc -p tsconfig.json --noEmit',
      test: 'npm run build && vitest run',
      changeset: 'changeset',
    },
    dependencies: pick(RUNTIME_PACKAGES),
    devDependencies: pick(DEVELOPMENT_PACKAGES),
    ...(tarballs ? { overrides: tarballs.overrides } : {}),
    keywords: ['linux', 'live-update', 'luo', 'kho'],
  };
}
