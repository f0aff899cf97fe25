// Type-checks TypeScript files (README examples written to disk) with this repository's compiler
// options — tooling/tsconfig/base.json, the ones an author using the packages would have — and
// runs one compiled with Node.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const BASE = fileURLToPath(new URL('../tsconfig/base.json', import.meta.url));

function compilerOptions() {
  const { config, error } = ts.readConfigFile(BASE, ts.sys.readFile);
  if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, '\n'));
  const { options } = ts.convertCompilerOptionsFromJson(config.compilerOptions, BASE);
  return { ...options, noEmit: true, declaration: false, declarationMap: false, sourceMap: false };
}

/** @param {readonly string[]} files */
export function typecheckFiles(files) {
  const program = ts.createProgram([...files], compilerOptions());
  return ts
    .getPreEmitDiagnostics(program)
    .map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
}

/**
 * @param {string} source
 * @param {string} dir
 */
export function runTypeScriptExample(source, dir) {
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: { target: ts.ScriptTarget.ES2023, module: ts.ModuleKind.ESNext },
  });
  writeFileSync(join(dir, 'main.mjs'), outputText);
  return execFileSync(process.execPath, ['main.mjs'], { cwd: dir, encoding: 'utf8' }).trim();
}
