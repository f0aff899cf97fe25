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
 */
export declare function readmeExamples(testFileUrl: string): ReadmeExample[];

/**
 * Type-check every ```ts block of the package's README.md, each as a module of its own in a
 * temporary folder of the test folder (so the package resolves to itself by name). The
 * diagnostics, each as `README.md:line:column: message`; an empty array when all compile.
 *
 * @param testFileUrl `import.meta.url` of a test in `<package>/test/`.
 */
export declare function typecheckReadmeExamples(testFileUrl: string): string[];

/**
 * Compile the first ```ts block of the package's README.md, run it with Node from a temporary
 * folder of the test folder, and return what it printed, trimmed.
 *
 * @param testFileUrl `import.meta.url` of a test in `<package>/test/`.
 */
export declare function runReadmeExample(testFileUrl: string): string;
