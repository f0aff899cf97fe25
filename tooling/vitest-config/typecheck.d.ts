/**
 * The diagnostics of type-checking `files` with this repository's compiler options
 * (`tooling/tsconfig/base.json`, no emit), each as `file(line,column): message`: an empty array
 * when they compile. `moduleDetection: 'force'` makes every file a module, even one without
 * imports or exports.
 */
export declare function typecheckFiles(
  files: readonly string[],
  options?: { moduleDetection?: 'force' },
): string[];

/**
 * Compile `source` to an ES module `main.mjs` in `dir`, run it with Node from `dir`, and return
 * what it printed, trimmed.
 */
export declare function runTypeScriptExample(source: string, dir: string): string;
