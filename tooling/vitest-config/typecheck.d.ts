/**
 * The diagnostics of type-checking `files` with this repository's compiler options
 * (`tooling/tsconfig/base.json`, no emit): an empty array when they compile.
 */
export declare function typecheckFiles(files: readonly string[]): string[];

/**
 * Compile `source` to an ES module `main.mjs` in `dir`, run it with Node from `dir`, and return
 * what it printed, trimmed.
 */
export declare function runTypeScriptExample(source: string, dir: string): string;
