import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { expect, it } from 'vitest';

const readme = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];

it('type-checks and runs the README example: pending jobs come back after a live update', () => {
  expect(example).toBeDefined();
  // Inside the package, so that its own name resolves to it by self-reference, as it would for
  // someone who installed it.
  const dir = mkdtempSync(fileURLToPath(new URL('./readme-', import.meta.url)));
  try {
    const source = join(dir, 'main.ts');
    writeFileSync(source, example!);
    // The compiler options of this repository (tooling/tsconfig/base.json), as an author's would be.
    const program = ts.createProgram([source], {
      target: ts.ScriptTarget.ES2023,
      lib: ['lib.es2023.d.ts'],
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      types: ['node'],
      strict: true,
      noUncheckedIndexedAccess: true,
      verbatimModuleSyntax: true,
      skipLibCheck: true,
      noEmit: true,
    });
    const diagnostics = ts
      .getPreEmitDiagnostics(program)
      .map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    expect(diagnostics).toEqual([]);

    const { outputText } = ts.transpileModule(example!, {
      compilerOptions: { target: ts.ScriptTarget.ES2023, module: ts.ModuleKind.ESNext },
    });
    writeFileSync(join(dir, 'main.mjs'), outputText);
    const output = execFileSync(process.execPath, ['main.mjs'], { cwd: dir, encoding: 'utf8' });
    expect(output.trim()).toBe('5 jobs');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
