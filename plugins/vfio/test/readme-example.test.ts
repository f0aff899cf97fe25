import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

it('runs the README example: the copy engine copies inside guest RAM', () => {
  const readme = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
  const [main] = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);
  // Inside the package, so that `@liveupdate/plugin-vfio` resolves to it by self-reference.
  const dir = mkdtempSync(fileURLToPath(new URL('./readme-', import.meta.url)));
  try {
    writeFileSync(join(dir, 'main.mjs'), main!);
    const output = execFileSync(process.execPath, ['main.mjs'], { cwd: dir, encoding: 'utf8' });
    expect(output.trim()).toBe('hello');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
