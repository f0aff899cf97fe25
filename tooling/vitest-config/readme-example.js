// The TypeScript examples of a package's README.md, checked as a user of the package would meet
// them: each ```ts block is written to a file of its own in a temporary folder inside the
// package's test folder (so that the package's own name resolves to it by self-reference, exactly
// as it would for someone who installed it), type-checked with the repository's compiler options,
// and the first one run with Node.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTypeScriptExample, transpileExample, typecheckFiles } from './typecheck.js';

/**
 * @param {string} testFileUrl
 * @param {string} [readmePath]
 */
export function readmeExamples(testFileUrl, readmePath) {
  const readme = readFileSync(
    readmePath ?? fileURLToPath(new URL('../README.md', testFileUrl)),
    'utf8',
  );
  // A fence may be indented (a block inside a list item); its lines are, by as much.
  return [...readme.matchAll(/^( *)```ts\n([\s\S]*?)^ *```$/gm)].map((match) => {
    const indent = match[1].length;
    return {
      line: readme.slice(0, match.index).split('\n').length + 1,
      source: match[2]
        .split('\n')
        .map((text) => text.slice(Math.min(indent, text.length - text.trimStart().length)))
        .join('\n'),
    };
  });
}

/**
 * @param {string} testFileUrl
 * @param {(dir: string) => void} work
 */
function inTemporaryFolder(testFileUrl, work) {
  const dir = mkdtempSync(fileURLToPath(new URL('./readme-', testFileUrl)));
  try {
    return work(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * @param {string} testFileUrl
 * @param {string} [readmePath]
 */
export function typecheckReadmeExamples(testFileUrl, readmePath) {
  const label = readmePath ?? 'README.md';
  const examples = readmeExamples(testFileUrl, readmePath);
  if (examples.length === 0) throw new Error(`${label} has no \`\`\`ts example`);
  return inTemporaryFolder(testFileUrl, (dir) => {
    const files = examples.map(({ line, source }) => {
      const file = join(dir, `readme-line-${line}.ts`);
      writeFileSync(file, source);
      return file;
    });
    // Each block is a module of its own (a block without imports would otherwise share the
    // global scope with the others); a diagnostic names the README line its block starts on.
    return typecheckFiles(files, { moduleDetection: 'force' }).map((message) =>
      message.replace(
        /^(readme-line-(\d+)\.ts)\((\d+),(\d+)\)/,
        (_, _file, start, line, column) => `${label}:${Number(start) + Number(line) - 1}:${column}`,
      ),
    );
  });
}

/**
 * @param {string} testFileUrl
 * @param {{ main?: string; modules?: Record<string, string> }} [options]
 */
export function runReadmeExample(testFileUrl, options = {}) {
  const examples = readmeExamples(testFileUrl);
  /** @param {string | undefined} firstLine */
  const find = (firstLine) => {
    const example =
      firstLine === undefined
        ? examples[0]
        : examples.find(({ source }) => source.split('\n', 1)[0] === firstLine);
    if (example === undefined) {
      throw new Error(
        `README.md has no \`\`\`ts example${firstLine ? ` starting ${firstLine}` : ''}`,
      );
    }
    return example.source;
  };
  const main = find(options.main);
  const modules = Object.entries(options.modules ?? {}).map(([file, firstLine]) => [
    file,
    transpileExample(find(firstLine)),
  ]);
  return inTemporaryFolder(testFileUrl, (dir) => {
    for (const [file, code] of modules) writeFileSync(join(dir, file), code);
    return runTypeScriptExample(main, dir);
  });
}
