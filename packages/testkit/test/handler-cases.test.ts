// The table tester, as an author uses it (runHandlerCases with the note handler's own cases),
// and what it does with cases that are malformed or fail.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  O_APPEND,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  type Process,
} from '@liveupdate/machine';
import {
  checkHandlerCase,
  checkHandlerCases,
  handlerCase,
  runHandlerCases,
  type HandlerCasesOptions,
} from '@liveupdate/testkit';
import { CELL_MODULE, NOTE_MODULE, TEST_RAM, createNote, readNote } from './helpers.js';

const machine = {
  name: 'note-v1 cases',
  handlerCompatible: 'note-v1',
  modules: [NOTE_MODULE],
  ramBytes: TEST_RAM,
} as const;

runHandlerCases({
  ...machine,
  readContent: readNote,
  preservable: [
    handlerCase({ name: 'a note', setup: ({ process }) => createNote(process, 'kept') }),
    handlerCase({ name: 'an empty note', setup: ({ process }) => createNote(process, '') }),
  ],
  refused: [
    handlerCase({
      name: '/dev/null, which no handler takes',
      setup: ({ process }) => process.open('/dev/null', O_RDWR),
      errno: 'ENOENT',
    }),
    handlerCase({
      name: 'a dup of a note preserved in another session',
      async setup({ process, device }) {
        const fd = await createNote(process, 'once');
        await (await device.createSession('other')).preserveFd(fd, 1n);
        return process.dup(fd);
      },
      errno: 'EBUSY',
    }),
  ],
  failing: [
    handlerCase({
      name: 'a second note under a token already used',
      async setup({ process, session }) {
        await session.preserveFd(await createNote(process, 'first'), 1n);
        return createNote(process, 'second');
      },
      op: ({ session }, fd: number) => session.preserveFd(fd, 1n),
      errno: 'EEXIST',
    }),
  ],
});

const cells = {
  name: 'cell-v1 cases',
  handlerCompatible: 'cell-v1',
  modules: [CELL_MODULE],
  ramBytes: TEST_RAM,
} as const;
const openCell = (flags: number) => (context: { process: Process }) =>
  context.process.open('/dev/cell', flags);

// A handler that rebuilds its device file with vfs.reopenCharDevice keeps every open mode.
runHandlerCases({
  ...cells,
  preservable: [
    handlerCase({ name: 'a cell opened read-only', setup: openCell(O_RDONLY) }),
    handlerCase({
      name: 'a cell opened write-only to append',
      setup: openCell(O_WRONLY | O_APPEND),
    }),
    handlerCase({ name: 'a non-blocking read-write cell', setup: openCell(O_RDWR | O_NONBLOCK) }),
  ],
});

/** The line of this file that contains `marker`, 1-based. */
function lineOf(marker: string): number {
  const source = readFileSync(new URL(import.meta.url), 'utf8').split('\n');
  return source.findIndex((line) => line.includes(marker)) + 1;
}

const setup = async (): Promise<number> => 0;

describe('checkHandlerCases', () => {
  it.each<[string, Partial<HandlerCasesOptions>, RegExp]>([
    [
      'an unknown key',
      { refused: [{ name: 'typo', setup, erno: 'EPERM' } as never] },
      /^cases: refused case "typo" at .*handler-cases\.test\.ts:\d+:\d+ \(refused\[0\]\): unknown key "erno"; a refused case has name, setup, errno$/,
    ],
    [
      'a failing case without errno',
      { failing: [{ name: 'no errno', setup, op: setup } as never] },
      /failing case "no errno" at .*: a failing case needs an errno: say which errno the operation must fail with, e.g. errno: 'EPERM'$/,
    ],
    [
      'an errno that does not exist',
      { refused: [{ name: 'bad errno', setup, errno: 'EWHAT' } as never] },
      /refused case "bad errno" at .*: errno must be an errno name such as 'EINVAL', got 'EWHAT'$/,
    ],
    [
      'a case without setup',
      { preservable: [{ name: 'no setup' } as never] },
      /preservable case "no setup" at .*: setup must be a function, got undefined$/,
    ],
    [
      'a case without a name',
      { preservable: [{ setup } as never] },
      /^cases: preservable\[0\] at .*: name must be a non-empty string, got undefined$/,
    ],
    ['no cases at all', {}, /^cases: no cases; give preservable, refused or failing cases$/],
  ])('refuses %s with a TypeError naming the case', (_what, cases, message) => {
    expect(() => checkHandlerCases('cases', { ...machine, ...cases })).toThrow(
      expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(message) }),
    );
  });

  it('refuses two cases with one name, pointing at both', () => {
    const first = handlerCase({ name: 'twice', setup }); // first of twice
    const second = handlerCase({ name: 'twice', setup, errno: 'EPERM' }); // second of twice
    expect(() =>
      checkHandlerCases('cases', { ...machine, preservable: [first], refused: [second] }),
    ).toThrow(
      new RegExp(
        `refused case "twice" at test/handler-cases\\.test\\.ts:${lineOf('// second of twice')}:\\d+: the name is also used by the preservable case at test/handler-cases\\.test\\.ts:${lineOf('// first of twice')}:\\d+; each case becomes a test`,
      ),
    );
  });

  it('locates a handlerCase() at its own line, a plain object at the call and its index, and freezes both', () => {
    const plain = { name: 'plain', setup };
    const marked = handlerCase({ name: 'marked', setup }); // marked case
    const [a, b] = checkHandlerCases('cases', { ...machine, preservable: [plain, marked] }); // the call
    expect(a!.location).toBe(
      `test/handler-cases.test.ts:${lineOf('// the call')}:${a!.site!.column} (preservable[0])`,
    );
    expect(b!.location).toMatch(`test/handler-cases.test.ts:${lineOf('// marked case')}:`);
    expect(Object.isFrozen(plain) && Object.isFrozen(marked)).toBe(true);
  });
});

describe('checkHandlerCase', () => {
  it('fails a case whose operation fails with another errno, naming the case and its line', async () => {
    const options: HandlerCasesOptions = {
      ...machine,
      failing: [
        handlerCase({
          name: 'reading a note with a bad fd', // wrong errno
          setup,
          op: ({ process }) => process.pread(99, 1, 0),
          errno: 'EPERM',
        }),
      ],
    };
    const [entry] = checkHandlerCases('cases', options);
    const verdict = await checkHandlerCase(options, entry!);
    expect(verdict.passed).toBe(false);
    expect(verdict.message).toMatch(
      new RegExp(
        `^failing case "reading a note with a bad fd" at test/handler-cases\\.test\\.ts:${lineOf('// wrong errno') - 1}:\\d+: op failed with EBADF \\(.*\\); expected EPERM$`,
      ),
    );
  });

  it('fails a preservable case whose file comes back with other open flags, naming both', async () => {
    const options: HandlerCasesOptions = {
      ...cells,
      cmdline: 'cell.bug=lose-mode',
      preservable: [
        { name: 'read-only', setup: openCell(O_RDONLY) },
        { name: 'non-blocking', setup: openCell(O_RDWR | O_NONBLOCK) },
        { name: 'read-write', setup: openCell(O_RDWR) },
      ],
    };
    const verdicts = await Promise.all(
      checkHandlerCases('cases', options).map((entry) => checkHandlerCase(options, entry)),
    );
    expect(verdicts.map((v) => v.message?.replace(/ at .*?\]\)/, '') ?? 'passed')).toEqual([
      'preservable case "read-only": the retrieved file\'s open flags differ\n  expected: O_RDONLY\n  actual:   O_RDWR',
      'preservable case "non-blocking": the retrieved file\'s open flags differ\n  expected: O_RDWR | O_NONBLOCK\n  actual:   O_RDWR',
      'passed',
    ]);
  });

  it('fails a refused case that is preserved, and a preservable one that is refused', async () => {
    const options: HandlerCasesOptions = {
      ...machine,
      refused: [{ name: 'a note after all', setup: ({ process }) => createNote(process, 'x') }],
      preservable: [
        { name: 'not a note', setup: ({ process }) => process.open('/dev/null', O_RDWR) },
      ],
    };
    const verdicts = await Promise.all(
      checkHandlerCases('cases', options).map((entry) => checkHandlerCase(options, entry)),
    );
    expect(verdicts.map((v) => v.message?.replace(/ at .*?\]\)/, ''))).toEqual([
      'preservable case "not a note": PRESERVE_FD failed: ENOENT (LUO: no file handler can preserve /dev/null)',
      'refused case "a note after all": PRESERVE_FD succeeded; expected an error',
    ]);
  });
});
