import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

it('imports the handler contract and the client without tsyringe or reflect-metadata', () => {
  // A fresh process, so nothing another test loaded can hide a dependency.
  const script = [
    "const core = await import('@liveupdate/core');",
    "if (typeof core.defineHandler !== 'function' || typeof core.LiveUpdateDevice !== 'function') throw new Error('missing exports');",
    'console.log(typeof Reflect.getMetadata);',
  ].join('\n');
  const output = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    encoding: 'utf8',
  });
  expect(output.trim()).toBe('undefined');
});
