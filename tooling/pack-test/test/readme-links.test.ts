// The docs a user receives: pack every published package as `pnpm publish` would, unpack each
// tarball, and follow every relative link of every Markdown file in it (the README and the docs
// its `prepack` shipped). A link that leaves the package, or names a file the tarball does not
// hold, is broken for everyone who installed it.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packPackages, publishedPackages, run, temporaryProject } from './pack-helpers.js';

/** Every file under `dir`, as paths relative to it. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((path) =>
    statSync(join(dir, path)).isFile(),
  );
}

/** The relative link targets of a Markdown text, outside its code blocks and code spans. */
function relativeLinks(markdown: string): string[] {
  const prose = markdown.replace(/^\s*```[\s\S]*?^\s*```/gm, '').replace(/`[^`\n]*`/g, 'code');
  return [...prose.matchAll(/\[[^\]]*\]\(([^)\s]+)\)/g)]
    .map((match) => match[1]!)
    .filter((target) => !/^[a-z][a-z0-9+.-]*:/i.test(target) && !target.startsWith('#'));
}

describe('the links of the published READMEs and docs, inside the packed tarballs', () => {
  const packages = publishedPackages();
  let project = '';
  const unpacked = new Map<string, string>();

  beforeAll(async () => {
    project = temporaryProject('liveupdate-readme-links-');
    const packed = await packPackages(packages, project);
    await Promise.all(
      packed.map(async ({ name, tarball }) => {
        const dir = join(project, name.replace('/', '+'));
        mkdirSync(dir);
        await run('tar', ['-xzf', join(project, tarball), '-C', dir]);
        unpacked.set(name, join(dir, 'package'));
      }),
    );
  }, 180_000);

  afterAll(() => {
    if (project) rmSync(project, { recursive: true, force: true });
  });

  it('finds links to check: the READMEs link to the docs shipped beside them', () => {
    const core = unpacked.get('@liveupdate/core')!;
    expect(relativeLinks(readFileSync(join(core, 'README.md'), 'utf8'))).toContain(
      'docs/writing-a-handler.md',
    );
    expect(existsSync(join(core, 'docs/writing-a-handler.md'))).toBe(true);
  });

  it('resolves every relative link of every Markdown file to a file of the same tarball', () => {
    const broken: string[] = [];
    for (const { name } of packages) {
      const dir = unpacked.get(name)!;
      expect(existsSync(join(dir, 'README.md')), `${name} ships a README.md`).toBe(true);
      for (const file of filesUnder(dir).filter((path) => path.endsWith('.md'))) {
        const markdown = readFileSync(join(dir, file), 'utf8');
        for (const target of relativeLinks(markdown)) {
          const path = resolve(dir, file, '..', decodeURI(target.split('#')[0]!));
          const inside = !relative(dir, path).startsWith('..');
          if (!inside || !existsSync(path)) broken.push(`${name}: ${file} links to ${target}`);
        }
      }
    }
    expect(broken).toEqual([]);
  });
});
