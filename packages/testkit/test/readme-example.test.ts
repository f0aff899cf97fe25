import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

it('runs the README example: a stamp preserved in kernel 1 is read back in kernel 2', () => {
  const readme = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
  const [module, main] = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);
  // Inside the package, so that `@liveupdate/testkit` resolves to this package by self-reference.
  const dir = mkdtempSync(fileURLToPath(new URL('./readme-', import.meta.url)));
  try {
    writeFileSync(join(dir, 'stamp-module.js'), module!);
    writeFileSync(join(dir, 'main.mjs'), main!);
    const output = execFileSync(process.execPath, ['main.mjs'], { cwd: dir, encoding: 'utf8' });
    expect(output.trim()).toBe('42n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
