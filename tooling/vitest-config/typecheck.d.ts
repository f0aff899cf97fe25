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

/** `source` compiled to an ES module (types erased), as `tsc` would emit it for Node. */
export declare function transpileExample(source: string): string;

/**
 * Compile `source` to an ES module `main.mjs` in `dir`, run it with Node from `dir`, and return
 * what it printed, trimmed.
 */
export declare function runTypeScriptExample(source: string, dir: string): string;
