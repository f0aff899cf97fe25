/**
 * Why the starter refused, with the exit code the command ends with: 2 for a usage error (a bad
 * or missing argument, an unknown option), 1 when the project cannot be written (a folder that
 * is not empty, tarballs that are missing).
 */
export class StarterError extends Error {
  readonly exitCode: 1 | 2;

  constructor(message: string, exitCode: 1 | 2) {
    super(message);
    this.name = 'StarterError';
    this.exitCode = exitCode;
  }
}
