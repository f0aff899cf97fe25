import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { runTypeScriptExample, typecheckFiles } from '@liveupdate/vitest-config/typecheck';

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
    expect(typecheckFiles([source])).toEqual([]);
    expect(runTypeScriptExample(example!, dir)).toBe('5 jobs');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
