import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkHandlerName } from './handler-name.js';
import { handlerPackageJson } from './handler-package-json.js';
import { StarterError } from './starter-error.js';
import { tarballDependencies } from './tarball-dependencies.js';
import { templateVersions } from './template-versions.js';

/** Options of {@link createHandlerProject}. */
export interface CreateHandlerProjectOptions {
  /** The npm package name: `my-handler` or `@scope/my-handler`. */
  readonly packageName: string;
  /** Where the project folder (named after the package, without its scope) goes. */
  readonly cwd: string;
  /** A folder of `@liveupdate/*` tarballs to depend on instead of the registry. */
  readonly fromTarballs?: string;
}

/** What {@link createHandlerProject} wrote. */
export interface CreatedHandlerProject {
  /** The project folder. */
  readonly dir: string;
  /** Every file written, relative to `dir`, `/`-separated, sorted. */
  readonly files: readonly string[];
}

const TEMPLATE_DIR = fileURLToPath(new URL('../template', import.meta.url));

/**
 * A template file's path in the project: a leading `_` of a path segment becomes a `.`, because
 * npm leaves `.gitignore` files out of a package (and `_changeset` keeps the folder visible).
 */
const projectPath = (templatePath: string): string =>
  templatePath
    .split('/')
    .map((segment) => segment.replace(/^_/, '.'))
    .join('/');

function templateFiles(dir: string, prefix = ''): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? templateFiles(join(dir, entry.name), `${prefix}${entry.name}/`)
      : [`${prefix}${entry.name}`],
  );
}

/**
 * Write a new handler package into `<cwd>/<name>`: `package.json`, the TypeScript and vitest
 * configuration, a kernel module with the char device `/dev/<name>` and its handler
 * `<name>-v1`, its tests, a README, a changeset setup and a `.gitignore`. The placeholders
 * `__PACKAGE_NAME__` and `__NAME__` of the template files become the package name and the name.
 *
 * Refuses (a {@link StarterError}) a bad name (exit code 2), and a folder that exists and is not
 * empty, or tarballs that are missing (exit code 1), before it writes anything.
 */
export function createHandlerProject(options: CreateHandlerProjectOptions): CreatedHandlerProject {
  const handlerName = checkHandlerName(options.packageName);
  const dir = resolve(options.cwd, handlerName.name);
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw new StarterError(`${dir} exists and is a file`, 1);
    if (readdirSync(dir).length > 0) {
      throw new StarterError(`${dir} is not empty; choose another name or empty it`, 1);
    }
  }
  const tarballs =
    options.fromTarballs === undefined
      ? undefined
      : tarballDependencies(resolve(options.cwd, options.fromTarballs), dir);
  const packageJson = handlerPackageJson(handlerName, templateVersions(), tarballs);

  const written = new Map<string, string>([
    ['package.json', `${JSON.stringify(packageJson, null, 2)}\n`],
  ]);
  for (const file of templateFiles(TEMPLATE_DIR)) {
    const text = readFileSync(join(TEMPLATE_DIR, file), 'utf8')
      .replaceAll('__PACKAGE_NAME__', handlerName.packageName)
      .replaceAll('__NAME__', handlerName.name);
    written.set(projectPath(file), text);
  }
  for (const [file, text] of written) {
    const path = join(dir, file);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
  }
  return { dir, files: [...written.keys()].sort() };
}
