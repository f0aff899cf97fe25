// Runs the first ```js block of a package's README.md with Node, from a temporary folder inside
// the package's test folder, so that the package's own name resolves to it by self-reference
// exactly as it would for someone who installed it. Returns what the example printed.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** @param {string} testFileUrl `import.meta.url` of a test in `<package>/test/`. */
export function runReadmeExample(testFileUrl) {
  const readme = readFileSync(fileURLToPath(new URL('../README.md', testFileUrl)), 'utf8');
  const example = /```js\n([\s\S]*?)```/.exec(readme)?.[1];
  if (example === undefined) throw new Error('README.md has no ```js example');
  const dir = mkdtempSync(fileURLToPath(new URL('./readme-', testFileUrl)));
  try {
    writeFileSync(join(dir, 'main.mjs'), example);
    return execFileSync(process.execPath, ['main.mjs'], { cwd: dir, encoding: 'utf8' }).trim();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
