import { parseArgs } from 'node:util';
import { createHandlerProject } from './create-handler-project.js';
import { StarterError } from './starter-error.js';

/** Where {@link runStarter} writes: the command's stdout and stderr. */
export interface StarterOutput {
  out(text: string): void;
  error(text: string): void;
}

/** `--help`. */
export const STARTER_USAGE = `Usage: npm create @liveupdate/handler <name> [-- --from-tarballs <dir>]
       create-handler <name> [--from-tarballs <dir>]

Writes a new Live Update Orchestrator file-handler package into the folder <name> (without its
scope): a kernel module with the char device /dev/<name>, whose open files hold a small value in a
kernel page, its handler <name>-v1, and tests through @liveupdate/testkit.

  <name>                   the npm package name: my-handler or @scope/my-handler
  --from-tarballs <dir>    depend on the @liveupdate/* tarballs in <dir> (file: specs), to
                           install without the registry's @liveupdate packages
  -h, --help               this text

Exit codes: 0 written, 1 the folder is not empty or the tarballs are missing, 2 a usage error.`;

/**
 * The command: parse `args` (without `node` and the script), write the project, and say what to
 * do next. Resolves with the exit code; never throws a {@link StarterError}, which it prints.
 */
export function runStarter(args: readonly string[], cwd: string, output: StarterOutput): number {
  try {
    let parsed;
    try {
      parsed = parseArgs({
        args: [...args],
        allowPositionals: true,
        options: {
          'from-tarballs': { type: 'string' },
          help: { type: 'boolean', short: 'h' },
        },
      });
    } catch (error) {
      throw new StarterError(`${(error as Error).message}\n\n${STARTER_USAGE}`, 2);
    }
    if (parsed.values.help) {
      output.out(STARTER_USAGE);
      return 0;
    }
    const [packageName, ...extra] = parsed.positionals;
    if (packageName === undefined) {
      throw new StarterError(`the package name is missing\n\n${STARTER_USAGE}`, 2);
    }
    if (extra.length > 0) {
      throw new StarterError(
        `one package name, not ${parsed.positionals.length}: ${extra.join(' ')}`,
        2,
      );
    }
    const fromTarballs = parsed.values['from-tarballs'];
    const { dir, files } = createHandlerProject({
      packageName,
      cwd,
      ...(fromTarballs === undefined ? {} : { fromTarballs }),
    });
    output.out(
      [
        `Wrote ${files.length} files into ${dir}. Next:`,
        '',
        `  cd ${dir}`,
        '  npm install',
        '  npm test',
      ].join('\n'),
    );
    return 0;
  } catch (error) {
    if (!(error instanceof StarterError)) throw error;
    output.error(`create-handler: ${error.message}`);
    return error.exitCode;
  }
}
