// The laws catch what they are about: each deliberately broken note handler (a `note.bug=` of
// fixtures/note-module.js) fails the law it breaks, with a message that says why.
import { describe, expect, it } from 'vitest';
import {
  CONFORMANCE_LAWS,
  checkConformanceLaw,
  describeConformance,
  type ConformanceLawId,
} from '@liveupdate/testkit';
import { noteConformance } from './helpers.js';

describe('checkConformanceLaw against broken handlers', () => {
  it.each<[string, ConformanceLawId, RegExp]>([
    [
      'leak-frame',
      'preserve-unpreserve',
      /^after preserve, unpreserve and closing the file, the kernel is not as before the file was created: frames allocated: (\d+) → (\d+)$/,
    ],
    [
      'global-state',
      'no-outside-state',
      /RETRIEVE_FD of token 2 failed: ENOENT[\s\S]*module variables/,
    ],
    [
      'void-throws',
      'void-ops',
      /^unpreserve threw in kernel 6\.18\.0 \(LUO logged it and carried on; it must not fail\): KernelError: EBUSY/,
    ],
    [
      'unstable-id',
      'preserve-once',
      /^PRESERVE_FD of the same file under a second token failed with EEXIST .*; expected EBUSY: LUO tells files apart by getId/,
    ],
    [
      'unstable-id',
      'retrieve-twice',
      /^PRESERVE_FD of the retrieved file before FINISH succeeded; expected EBUSY/,
    ],
    [
      'forget-preserve',
      'reachable',
      /^the file retrieved in the next kernel: the content differs[\s\S]*0xaa/,
    ],
    [
      'orphan-page',
      'reachable',
      /^after RETRIEVE_FD and FINISH, 1 folios \(1 frames\) the previous kernel preserved are still unrestored/,
    ],
  ])('fails a handler with the bug %s on the law %s', async (bug, law, message) => {
    const verdict = await checkConformanceLaw(law, {
      ...noteConformance,
      cmdline: `note.bug=${bug}`,
    });
    expect(verdict).toMatchObject({ law, status: 'failed' });
    expect(verdict.message).toMatch(message);
  });

  it('passes the same laws for the handler without the bug', async () => {
    const verdicts = await Promise.all(
      (['preserve-unpreserve', 'reachable'] as const).map((law) =>
        checkConformanceLaw(law, noteConformance),
      ),
    );
    expect(verdicts.map((v) => v.status)).toEqual(['passed', 'passed']);
  });
});

describe('the conformance suite', () => {
  it('names every law with a sentence, once', () => {
    expect(CONFORMANCE_LAWS.map((l) => l.id)).toEqual([
      'can-preserve',
      'preserve-unpreserve',
      'preserve-once',
      'freeze-unfreeze',
      'retrieve-content',
      'retrieve-twice',
      'finish-unretrieved',
      'void-ops',
      'three-updates',
      'no-outside-state',
      'reachable',
    ]);
  });

  it('refuses malformed options at once with a TypeError that says what is expected', () => {
    const { createFile: _omitted, ...withoutFactory } = noteConformance;
    expect(() => describeConformance(withoutFactory as typeof noteConformance)).toThrow(
      /^describeConformance: createFile must be a function, got undefined$/,
    );
    expect(() => describeConformance({ ...noteConformance, modlues: [] } as never)).toThrow(
      /^describeConformance: unknown option "modlues"; the options are /,
    );
    expect(() => describeConformance({ ...noteConformance, handlerCompatible: '' })).toThrow(
      /handlerCompatible must be the compatible string/,
    );
  });
});
