// Type-checks TypeScript files (README examples written to disk) with this repository's compiler
// options — tooling/tsconfig/base.json, the ones an author using the packages would have — and
// runs one compiled with Node.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const BASE = fileURLToPath(new URL('../tsconfig/base.json', import.meta.url));

function compilerOptions() {
  const { config, error } = ts.readConfigFile(BASE, ts.sys.readFile);
  if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, '\n'));
  const { options } = ts.convertCompilerOptionsFromJson(config.compilerOptions, BASE);
  return { ...options, noEmit: true, declaration: false, declarationMap: false, sourceMap: false };
}

/**
 * @param {readonly string[]} files
 * @param {{ moduleDetection?: 'force' }} [options]
 */
export function typecheckFiles(files, options = {}) {
  const moduleDetection =
    options.moduleDetection === 'force' ? { moduleDetection: ts.ModuleDetectionKind.Force } : {};
  const program = ts.createProgram([...files], { ...compilerOptions(), ...moduleDetection });
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const message = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    if (d.file === undefined || d.start === undefined) return message;
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
    return `${basename(d.file.fileName)}(${line + 1},${character + 1}): ${message}`;
  });
}

/** @param {string} source */
export function transpileExample(source) {
  return ts.transpileModule(source, {
    compilerOptions: { target: ts.ScriptTarget.ES2023, module: ts.ModuleKind.ESNext },
  }).outputText;
}

/**
 * @param {string} source
 * @param {string} dir
 */
export function runTypeScriptExample(source, dir) {
  writeFileSync(join(dir, 'main.mjs'), transpileExample(source));
  return execFileSync(process.execPath, ['main.mjs'], { cwd: dir, encoding: 'utf8' }).trim();
}
