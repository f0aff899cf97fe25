import { readFileSync } from 'node:fs';
import { format } from 'node:util';
import { expect, test } from 'vitest';
import * as fdt from './index.js';

// Runs the README's first ```ts block against the sources, so the documented example cannot rot.
// The block is plain JavaScript apart from its import line, which is replaced by parameters.

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const example = /```ts\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';

test('the README example runs and prints what its comments say', () => {
  const body = example.replace(/^import [\s\S]*?;\n/m, '');
  const expected = [...body.matchAll(/console\.log\(.*\); \/\/ (.*)$/gm)].map((m) => m[1]);
  expect(expected.length).toBeGreaterThan(0);

  const printed: string[] = [];
  const fakeConsole = { log: (...args: unknown[]) => printed.push(format(...args)) };
  const names = Object.keys(fdt);
  const run = new Function(...names, 'console', body) as (...args: unknown[]) => void;
  run(...names.map((name) => (fdt as Record<string, unknown>)[name]), fakeConsole);

  expect(printed).toEqual(expected);
});
