#!/usr/bin/env node
// `prepack` of a published package: copy the repository's docs its README links to into the
// package's own `docs/` folder (listed in its `files`), so that the links still work in the
// tarball. The arguments name docs of the repository's `docs/` folder; every doc they link to is
// shipped too, so a shipped doc never links to one that stayed behind. A link of a shipped doc
// to a file of this package is rewritten to point at it from the package's `docs/`; a link to
// any other file of the repository cannot work once installed and becomes plain text naming that
// file, so that nothing in the tarball points outside it.
//
// Usage, from the package folder: node ../../tooling/scripts/ship-docs.mjs writing-a-handler.md …
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const docsDir = join(root, 'docs');
const packageDir = process.cwd();
const shippedDir = join(packageDir, 'docs');

// [text](target), the form every doc here uses; images and reference links are not used.
const LINK = /\[([^\]]*)\]\(([^)\s]+)\)/g;
const isExternal = (target) => /^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#');
const isInside = (dir, path) => !relative(dir, path).startsWith('..');

if (!existsSync(join(packageDir, 'package.json')) || !isInside(root, packageDir)) {
  throw new Error(`ship-docs: run it from a package folder of the repository, not ${packageDir}`);
}
const requested = process.argv.slice(2);
if (requested.length === 0) throw new Error('ship-docs: name at least one doc of docs/');

/** The docs to ship: those requested and every doc of docs/ they link to, transitively. */
function closure(names) {
  const shipped = new Set();
  const pending = [...names];
  while (pending.length > 0) {
    const name = pending.pop();
    if (shipped.has(name)) continue;
    const path = join(docsDir, name);
    if (!existsSync(path)) throw new Error(`ship-docs: docs/${name} does not exist`);
    shipped.add(name);
    for (const [, , target] of readFileSync(path, 'utf8').matchAll(LINK)) {
      if (isExternal(target)) continue;
      const linked = resolve(docsDir, target.split('#')[0]);
      if (dirname(linked) === docsDir && linked.endsWith('.md')) {
        pending.push(relative(docsDir, linked));
      }
    }
  }
  return [...shipped].sort();
}

/** `text` of a shipped doc with its links made to work from the package's `docs/`. */
function rewriteLinks(text) {
  return text.replace(LINK, (link, label, target) => {
    if (isExternal(target)) return link;
    const [path, anchor] = target.split('#');
    const linked = resolve(docsDir, path);
    if (dirname(linked) === docsDir) return link;
    if (isInside(packageDir, linked)) {
      const fromShipped = relative(shippedDir, linked).split(sep).join('/');
      return `[${label}](${fromShipped}${anchor === undefined ? '' : `#${anchor}`})`;
    }
    const inRepository = relative(root, linked).split(sep).join('/');
    return `${label} (\`${inRepository}\` in the liveupdate repository)`;
  });
}

rmSync(shippedDir, { recursive: true, force: true });
mkdirSync(shippedDir);
for (const name of closure(requested)) {
  writeFileSync(join(shippedDir, name), rewriteLinks(readFileSync(join(docsDir, name), 'utf8')));
}
