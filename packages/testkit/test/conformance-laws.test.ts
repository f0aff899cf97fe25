// The laws catch what they are about: each deliberately broken note handler (a `note.bug=` of
// fixtures/note-module.js) fails the law it breaks, with a message that says why.
import { describe, expect, it } from 'vitest';
import {
  CONFORMANCE_LAWS,
  checkConformanceLaw,
  describeConformance,
  type ConformanceLawId,
} from '@liveupdate/testkit';
import { cheatConformance, noteConformance } from './helpers.js';

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
      /^readContent of the retrieved file failed: EFAULT \(module note: access to 0x[0-9a-f]+\+0x4 touches frame 0x[0-9a-f]+, which is free memory, not memory of this kernel\)$/,
    ],
    [
      'orphan-page',
      'reachable',
      /^after RETRIEVE_FD and FINISH, 1 folios \(1 frames\) the previous kernel preserved were never restored \(1 of them freed by KHO as unclaimed\)/,
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

describe('the no-outside-state law against handlers that cheat', () => {
  it.each<[string, RegExp]>([
    [
      'module-variable',
      /^RETRIEVE_FD of token 2 failed: ENOENT \(cheat: no text via module-variable\)\n.*not in module variables, globalThis, other threads or memory it does not own/,
    ],
    [
      'globalthis',
      /^RETRIEVE_FD of token 2 failed: ENOENT \(cheat: no text via globalthis\)\n.*not in module variables, globalThis, other threads or memory it does not own/,
    ],
    ['broadcast-channel', /BroadcastChannel is not available to kernel code/],
    [
      'firmware',
      /^PRESERVE_FD of the file failed: EFAULT \(module cheat: access to 0x8000\+0x1000 touches frame 0x8000, which is firmware memory, not memory of this kernel\)$/,
    ],
    // The shared RAM behind a view is out of reach of any check; the poisoned firmware is not.
    [
      'raw-firmware',
      /^RETRIEVE_FD of token 2 failed: ENOENT \(cheat: no text via raw-firmware\)\n.*not in module variables, globalThis, other threads or memory it does not own/,
    ],
  ])('fails a handler that keeps its state through %s', async (via, message) => {
    const verdict = await checkConformanceLaw('no-outside-state', {
      ...cheatConformance,
      cmdline: `cheat.via=${via}`,
    });
    expect(verdict).toMatchObject({ law: 'no-outside-state', status: 'failed' });
    expect(verdict.message).toMatch(message);
  });

  it('passes the same handler when it keeps its state in preserved memory', async () => {
    expect(await checkConformanceLaw('no-outside-state', cheatConformance)).toMatchObject({
      status: 'passed',
    });
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
      /^describeConformance: give createFile \(one file per session\) or createSession \(a file and the files it depends on\), exactly one of them$/,
    );
    expect(() =>
      describeConformance({
        ...noteConformance,
        createSession: async () => ({ files: [], fileUnderTest: 'x' }),
      }),
    ).toThrow(/exactly one of them$/);
    expect(() =>
      describeConformance({ ...noteConformance, exceptions: { 'retrieve-thrice': 'no' } as never }),
    ).toThrow(
      /^describeConformance: exceptions names an unknown law 'retrieve-thrice'; the laws are can-preserve, /,
    );
    expect(() =>
      describeConformance({ ...noteConformance, exceptions: { reachable: ' ' } }),
    ).toThrow(
      /^describeConformance: the exception of law reachable must say why it cannot hold, got ' '$/,
    );
    expect(() => describeConformance({ ...noteConformance, modlues: [] } as never)).toThrow(
      /^describeConformance: unknown option "modlues"; the options are /,
    );
    expect(() => describeConformance({ ...noteConformance, handlerCompatible: '' })).toThrow(
      /handlerCompatible must be the compatible string/,
    );
    expect(() =>
      describeConformance({ ...noteConformance, devices: [{ kind: 'nic' }] as never }),
    ).toThrow(
      /^describeConformance: devices must list PCI devices as \{ kind, bdf, … \} \(e\.g\. \[\{ kind: 'nic', bdf: '00:03\.0' \}\]\), got \[ \{ kind: 'nic' \} \]$/,
    );
  });
});
