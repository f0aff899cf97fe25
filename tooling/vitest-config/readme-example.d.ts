/**
 * Run the first ```js block of the README.md next to the calling test's folder with Node, from a
 * temporary folder in that test folder (so the package resolves to itself by name), and return
 * what it printed, trimmed.
 *
 * @param testFileUrl `import.meta.url` of a test in `<package>/test/`.
 */
export declare function runReadmeExample(testFileUrl: string): string;
