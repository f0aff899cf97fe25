import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { StarterError } from './starter-error.js';
import { DEVELOPMENT_PACKAGES, RUNTIME_PACKAGES } from './template-versions.js';

/** How `npm pack` and `pnpm pack` name a tarball of `@liveupdate/<name>`: scope and name joined. */
const LIVEUPDATE_TARBALL = /^liveupdate-(.+?)-(\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?)\.tgz$/;

/** `file:` specs of the `@liveupdate/*` tarballs in a folder, for a project to install offline. */
export interface TarballDependencies {
  /** Every `@liveupdate/*` package with a tarball in the folder, by name. */
  readonly specs: Readonly<Record<string, string>>;
  /**
   * npm `overrides` that pin every `@liveupdate/*` package, at any depth, to its tarball: the
   * tarballs depend on one another by version range, and those versions may not be on the
   * registry (`$name` refers to the project's own dependency of that name).
   */
  readonly overrides: Readonly<Record<string, string>>;
}

/**
 * Find the tarballs of the `@liveupdate/*` packages in `tarballDir` (as `npm pack` or `pnpm pack`
 * names them) and write their `file:` specs relative to `projectDir`. Refuses (exit code 1) a
 * folder that does not exist, two tarballs of one package, and a missing tarball of a package the
 * project depends on.
 */
export function tarballDependencies(tarballDir: string, projectDir: string): TarballDependencies {
  const dir = resolve(tarballDir);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new StarterError(`--from-tarballs: ${dir} is not a folder`, 1);
  }
  const specs: Record<string, string> = {};
  for (const file of readdirSync(dir).sort()) {
    const match = LIVEUPDATE_TARBALL.exec(file);
    if (!match) continue;
    const name = `@liveupdate/${match[1]!}`;
    if (specs[name] !== undefined) {
      throw new StarterError(`--from-tarballs: ${dir} holds more than one tarball of ${name}`, 1);
    }
    specs[name] = `file:${relative(projectDir, join(dir, file)).split(sep).join('/')}`;
  }
  const direct = [...RUNTIME_PACKAGES, ...DEVELOPMENT_PACKAGES].filter((name) =>
    name.startsWith('@liveupdate/'),
  );
  const missing = direct.filter((name) => specs[name] === undefined);
  if (missing.length > 0) {
    throw new StarterError(`--from-tarballs: ${dir} has no tarball of ${missing.join(', ')}`, 1);
  }
  const overrides = Object.fromEntries(
    Object.entries(specs).map(([name, spec]) => [
      name,
      (direct as string[]).includes(name) ? `$${name}` : spec,
    ]),
  );
  return { specs, overrides };
}
