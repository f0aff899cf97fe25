/** A ```ts block of a README: the README line its source starts on, and its source. */
export interface ReadmeExample {
  readonly line: number;
  readonly source: string;
}

/**
 * The ```ts blocks of the README.md of the calling test's package, in order (a fence indented in
 * a list item loses its indentation).
 *
 * @param testFileUrl `import.meta.url` of a test in `<package>/test/`.
 * @param readmePath another README to read instead.
 */
export declare function readmeExamples(testFileUrl: string, readmePath?: string): ReadmeExample[];

/**
 * Type-check every ```ts block of the package's README.md, each as a module of its own in a
 * temporary folder of the test folder (so the package resolves to itself by name). The
 * diagnostics, each as `README.md:line:column: message`; an empty array when all compile.
 *
 * @param testFileUrl `import.meta.url` of a test in `<package>/test/`.
 * @param readmePath another README to check instead (its path then names it in diagnostics);
 *   its examples resolve packages from the calling test's package.
 */
export declare function typecheckReadmeExamples(testFileUrl: string, readmePath?: string): string[];

/**
 * Compile a ```ts block of the package's README.md (the first, or the one whose first line is
 * `main`), run it with Node from a temporary folder of the test folder, and return what it
 * printed, trimmed. `modules` names files to write beside it first, each compiled from the block
 * whose first line is given (`{ 'counter-module.js': '// counter-module.ts' }`), as the example's
 * kernel image loads them.
 *
 * @param testFileUrl `import.meta.url` of a test in `<package>/test/`.
 */
export declare function runReadmeExample(
  testFileUrl: string,
  options?: { main?: string; modules?: Record<string, string> },
): string;
