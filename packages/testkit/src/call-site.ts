import { isAbsolute, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A place in the author's source, from a stack trace. */
export interface CallSite {
  /** Absolute path of the file. */
  readonly file: string;
  readonly line: number;
  readonly column: number;
}

const PACKAGE_ROOT = fileURLToPath(new URL('..', import.meta.url));
/** The testkit's own code: built, and its sources (where source maps point frames). */
const OWN_DIRECTORIES = [`${PACKAGE_ROOT}dist`, `${PACKAGE_ROOT}src`];
const FRAME = /^\s*at (?:.*? \()?(.+?):(\d+):(\d+)\)?$/;

/**
 * The first frame of the current stack outside the testkit, Node's internals and `node_modules`:
 * the author's line that called into the testkit. `undefined` when there is none.
 */
export function callerSite(): CallSite | undefined {
  for (const line of (new Error().stack ?? '').split('\n').slice(1)) {
    const match = FRAME.exec(line);
    if (!match) continue;
    let file = match[1]!;
    if (file.startsWith('file://')) file = fileURLToPath(file);
    if (
      file.startsWith('node:') ||
      OWN_DIRECTORIES.some((directory) => file.startsWith(directory)) ||
      file.includes('/node_modules/') ||
      !isAbsolute(file)
    ) {
      continue;
    }
    return { file, line: Number(match[2]), column: Number(match[3]) };
  }
  return undefined;
}

/** `test/cases.test.ts:12:5`, relative to the working directory. */
export function formatCallSite(site: CallSite): string {
  return `${relative(process.cwd(), site.file)}:${site.line}:${site.column}`;
}

/**
 * An error whose stack is only `site`, so that test runners show the author's line (the case,
 * not the testkit's internals) as where it failed.
 */
export function errorAt(message: string, site: CallSite | undefined, cause?: unknown): Error {
  const error = new Error(message, cause === undefined ? undefined : { cause });
  if (site) error.stack = `Error: ${message}\n    at ${site.file}:${site.line}:${site.column}`;
  return error;
}
