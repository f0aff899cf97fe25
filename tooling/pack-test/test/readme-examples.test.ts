// Every ```ts example of every published README compiles for someone who installed the
// packages: checked from this package, which depends on all of them, so that an example may
// import any of them (the machine's README boots a kernel, which the machine package itself
// cannot depend on). The packages' own tests also run the examples they can.
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readmeExamples, typecheckReadmeExamples } from '@liveupdate/vitest-config/readme-example';
import { publishedPackages, root } from './pack-helpers.js';

describe('the TypeScript examples of the published READMEs', () => {
  for (const { name, dir } of publishedPackages()) {
    const readme = join(dir, 'README.md');
    it(`${name}: every example is TypeScript and type-checks`, () => {
      const label = relative(root, readme);
      const examples = readmeExamples(import.meta.url, readme);
      expect(examples.length, `${label} has a \`\`\`ts example`).toBeGreaterThan(0);
      expect(typecheckReadmeExamples(import.meta.url, readme)).toEqual([]);
    });
  }

  it('finds no JavaScript example left: each would be TypeScript, checked above', () => {
    const javaScript = publishedPackages().flatMap(({ dir }) => {
      const markdown = readFileSync(join(dir, 'README.md'), 'utf8');
      return [...markdown.matchAll(/^ *```(js|javascript|mjs|jsx)$/gm)].map(
        (match) =>
          `${relative(root, dir)}/README.md:${markdown.slice(0, match.index).split('\n').length}`,
      );
    });
    expect(javaScript).toEqual([]);
  });
});
