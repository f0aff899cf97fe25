// The conformance suite for files that depend on other files of their session (createSession),
// and the exceptions a handler's test declares, against the FLB fixture's items: a red-v1 item
// that depends on a blue-v1 item of the same session, preserved after it.
import { describe, expect, it } from 'vitest';
import {
  checkConformanceLaw,
  describeConformance,
  type ConformanceOptions,
} from '@liveupdate/testkit';
import { FLB_MODULE, TEST_RAM, createItem, noteConformance, readNote } from './helpers.js';

/** A red item whose retrieve needs its blue dependency, retrieved through the session. */
const dependentItems: ConformanceOptions = {
  name: 'red-v1 with its blue-v1 dependency',
  handlerCompatible: 'red-v1',
  modules: [FLB_MODULE],
  ramBytes: TEST_RAM,
  async createSession(process) {
    const blue = await createItem(process, 'blue', 'the dependency');
    const red = await createItem(process, 'red', 'under test', blue);
    return {
      files: [
        { name: 'blue', fd: blue },
        { name: 'red', fd: red },
      ],
      fileUnderTest: 'red',
    };
  },
  /** The red item's text, and its dependency's as the other file of the session shows it. */
  async readContent(process, fd, files) {
    return {
      red: await readNote(process, fd),
      blue: await readNote(process, await files.fd('blue')),
    };
  },
};

describeConformance(dependentItems);

describe('a session builder', () => {
  it('preserves the dependency first: the file under test alone cannot be preserved', async () => {
    const verdict = await checkConformanceLaw('retrieve-content', {
      ...dependentItems,
      async createSession(process) {
        const blue = await createItem(process, 'blue', 'the dependency');
        const red = await createItem(process, 'red', 'under test', blue);
        // The dependency listed after the file that needs it: red's preserve finds no token.
        return {
          files: [
            { name: 'red', fd: red },
            { name: 'blue', fd: blue },
          ],
          fileUnderTest: 'red',
        };
      },
    });
    expect(verdict.status).toBe('failed');
    expect(verdict.message).toMatch(/^PRESERVE_FD of the file failed: ENOENT/);
  });

  it('is checked: a file under test that is not among the files fails the law, saying so', async () => {
    const verdict = await checkConformanceLaw('retrieve-content', {
      ...dependentItems,
      createSession: async (process) => ({
        files: [{ name: 'blue', fd: await createItem(process, 'blue', 'alone') }],
        fileUnderTest: 'red',
      }),
    });
    expect(verdict.status).toBe('failed');
    expect(verdict.message).toMatch(
      /^createSession must resolve to \{ files: \[\{ name, fd \}, …\] \} with distinct names and fileUnderTest one of them/,
    );
  });
});

describe('a declared exception', () => {
  it('turns a failing law into a skip that gives the reason and the failure', async () => {
    const verdict = await checkConformanceLaw('preserve-unpreserve', {
      ...noteConformance,
      cmdline: 'note.bug=leak-frame',
      exceptions: { 'preserve-unpreserve': 'this build leaks a frame on purpose' },
    });
    expect(verdict.status).toBe('skipped');
    expect(verdict.message).toMatch(
      /^declared exception: this build leaks a frame on purpose\n {2}\(the law fails: after preserve, unpreserve and closing the file, the kernel is not as before the file was created: frames allocated: \d+ → \d+\)$/,
    );
  });

  it('fails a law that holds, so that a stale exception goes', async () => {
    const verdict = await checkConformanceLaw('preserve-unpreserve', {
      ...noteConformance,
      exceptions: { 'preserve-unpreserve': 'thought to leak' },
    });
    expect(verdict).toMatchObject({
      status: 'failed',
      message:
        'the law is declared an exception (thought to leak), but it holds: remove it from exceptions',
    });
  });

  it('leaves the other laws as they are: an undeclared failure still fails', async () => {
    const verdict = await checkConformanceLaw('preserve-unpreserve', {
      ...noteConformance,
      cmdline: 'note.bug=leak-frame',
      exceptions: { reachable: 'unrelated' },
    });
    expect(verdict.status).toBe('failed');
  });
});
