import { builtinModules } from 'node:module';
import { StarterError } from './starter-error.js';

/** What the starter derives from the name it is given. */
export interface HandlerName {
  /** The npm package name, as given: `my-handler` or `@scope/my-handler`. */
  readonly packageName: string;
  /**
   * The name without its scope: the folder, the kernel module, the char device `/dev/<name>`
   * and the handler's compatible `<name>-v1`.
   */
  readonly name: string;
}

/** npm's limit on a package name's length. */
const NPM_NAME_MAX = 214;
/** A compatible is at most 47 bytes (`LIVEUPDATE_HNDL_COMPAT_LENGTH` - 1); `-v1` takes 3. */
export const HANDLER_NAME_MAX = 44;
/** What a kernel module name (`[A-Za-z0-9_-]`) and a `/dev` path both accept, in lower case. */
const HANDLER_NAME = /^[a-z0-9][a-z0-9_-]*$/;
const SCOPED = /^@([^/]+)\/([^/]+)$/;

const bad = (name: string, why: string): never => {
  throw new StarterError(`${JSON.stringify(name)} is not a valid package name: ${why}`, 2);
};

/**
 * Check `packageName` against npm's rules for new package names (those of
 * `validate-npm-package-name`: at most 214 characters, lower case, URL-safe, no leading `.` or
 * `_`, not a Node built-in module) and against what the name becomes in the project: a kernel
 * module name, `/dev/<name>` and `<name>-v1` allow only `a-z`, `0-9`, `-` and `_`, 44 characters
 * at most. Throws a {@link StarterError} (exit code 2) saying what is wrong.
 */
export function checkHandlerName(packageName: string): HandlerName {
  if (packageName === '') bad(packageName, 'it is empty');
  if (packageName.trim() !== packageName) bad(packageName, 'it has leading or trailing spaces');
  if (packageName.length > NPM_NAME_MAX) bad(packageName, `it is longer than ${NPM_NAME_MAX}`);
  if (packageName.toLowerCase() !== packageName) bad(packageName, 'it has capital letters');
  const scoped = SCOPED.exec(packageName);
  const [scope, name] = scoped ? [scoped[1]!, scoped[2]!] : [undefined, packageName];
  for (const part of scope === undefined ? [name] : [scope, name]) {
    if (encodeURIComponent(part) !== part) bad(packageName, `"${part}" is not URL-safe`);
    if (part.startsWith('.') || part.startsWith('_')) {
      bad(packageName, `"${part}" starts with "${part[0]}"`);
    }
  }
  if (scope === undefined && builtinModules.includes(name)) {
    bad(packageName, 'it is the name of a Node built-in module');
  }
  if (['node_modules', 'favicon.ico'].includes(name)) bad(packageName, 'npm reserves it');
  if (!HANDLER_NAME.test(name)) {
    bad(
      packageName,
      `"${name}" names the kernel module, /dev/${name} and the handler ${name}-v1, which allow ` +
        'only a-z, 0-9, "-" and "_", starting with a letter or digit',
    );
  }
  if (name.length > HANDLER_NAME_MAX) {
    bad(packageName, `"${name}-v1" would be longer than a compatible's 47 bytes`);
  }
  return { packageName, name };
}
