import { describe, expect, it } from 'vitest';
import type { Process } from '@liveupdate/machine';
import {
  checkVersionMatrix,
  checkVersionPair,
  type HandlerVersion,
  type VersionMatrixOptions,
} from '@liveupdate/testkit';
import { TEST_RAM } from './helpers.js';

const fixture = (file: string): string => new URL(`./fixtures/${file}`, import.meta.url).href;

// Three builds of the stamp handler (fixtures/stamp-module.js): 1.0 knows only stamp-v1, 2.0
// writes stamp-v2 and can still write stamp-v1 for a 1.0 kernel, 3.0 dropped everything older.
const V1: HandlerVersion = {
  name: '1.0',
  modules: [fixture('stamp-v1-module.js')],
  writes: ['stamp-v1'],
  reads: ['stamp-v1'],
};
const V2: HandlerVersion = {
  name: '2.0',
  modules: [fixture('stamp-v2-module.js')],
  writes: ['stamp-v2', 'stamp-v1'],
  reads: ['stamp-v2', 'stamp-v1'],
};
const V3: HandlerVersion = {
  name: '3.0',
  modules: [fixture('stamp-v3-module.js')],
  writes: ['stamp-v3'],
  reads: ['stamp-v3'],
};

function matrix(versions: readonly HandlerVersion[]): VersionMatrixOptions {
  return {
    name: 'stamp versions',
    versions,
    ramBytes: TEST_RAM,
    createFile: (process: Process) => process.syscall('stamp_create', 42) as Promise<number>,
    readContent: (process: Process, fd: number) => process.syscall('stamp_read', fd),
    // After PRESERVE_FD: what crosses must be written at freeze, in the reader's format.
    async mutate(process: Process, fd: number) {
      await process.syscall('stamp_write', fd, 4242);
    },
  };
}

/** Several pairs, each two boots and a kexec, on a loaded 2-core machine. */
const MATRIX_TIMEOUT_MS = 300_000;
const PAIR_TIMEOUT_MS = 60_000;

describe('the version matrix', () => {
  it(
    'updates every pair whose formats meet, in the first format the reader takes, and sees every other refused before the blackout',
    async () => {
      const report = await checkVersionMatrix(matrix([V1, V2, V3]));
      const rows = report.pairs.map((p) => [p.writer, p.reader, p.outcome, p.format ?? null]);
      expect(rows).toEqual([
        ['1.0', '1.0', 'updated', 'stamp-v1'],
        ['1.0', '2.0', 'updated', 'stamp-v1'],
        ['1.0', '3.0', 'refused', null],
        // The downgrade: 2.0 writes stamp-v1 for a kernel that reads only that.
        ['2.0', '1.0', 'updated', 'stamp-v1'],
        ['2.0', '2.0', 'updated', 'stamp-v2'],
        ['2.0', '3.0', 'refused', null],
        ['3.0', '1.0', 'refused', null],
        ['3.0', '2.0', 'refused', null],
        ['3.0', '3.0', 'updated', 'stamp-v3'],
      ]);
      expect(report.pairs.filter((p) => !p.passed).map((p) => p.message)).toEqual([]);
      expect(report.passed).toBe(true);
      const lines = report.table.split('\n');
      expect(lines).toHaveLength(10);
      expect(lines[0]).toMatch(/^writer\s+reader\s+expected\s+outcome\s+format\s+result$/);
      expect(lines[4]).toMatch(/^2\.0\s+1\.0\s+updates as stamp-v1\s+updated\s+stamp-v1\s+ok$/);
      expect(lines[7]).toMatch(/^3\.0\s+1\.0\s+refused\s+refused\s+-\s+ok$/);
    },
    MATRIX_TIMEOUT_MS,
  );

  it(
    'fails a pair whose writer is declared to write a format its handler never writes',
    async () => {
      const liar: HandlerVersion = {
        ...V2,
        name: '2.0-no-downgrade',
        modules: [fixture('stamp-v2-no-downgrade-module.js')],
      };
      const verdict = await checkVersionPair(matrix([V1, liar]), '2.0-no-downgrade', '1.0');
      expect(verdict).toMatchObject({
        expected: 'updates',
        expectedFormat: 'stamp-v1',
        outcome: 'refused',
        passed: false,
      });
      expect(verdict.message).toMatch(
        /^2\.0-no-downgrade → 1\.0: declared to update, written as stamp-v1 .*, but CHECK_KEXEC found 1 problem\(s\): liveupdate: session "matrix" token 1: stamp-v2 writes stamp-v2; it reads none of them; reboot refused the kexec: ENOEXEC/,
      );
    },
    PAIR_TIMEOUT_MS,
  );

  it(
    'fails a pair whose reader is declared to read a format its build does not',
    async () => {
      const liar: HandlerVersion = {
        ...V3,
        name: '3.0-claims-v2',
        reads: ['stamp-v3', 'stamp-v2'],
      };
      const verdict = await checkVersionPair(matrix([V2, liar]), '2.0', '3.0-claims-v2');
      expect(verdict).toMatchObject({
        expected: 'updates',
        expectedFormat: 'stamp-v2',
        outcome: 'refused',
        passed: false,
      });
      expect(verdict.message).toContain(
        '2.0 → 3.0-claims-v2: declared to update, written as stamp-v2',
      );
      expect(verdict.message).toContain('reboot refused the kexec: ENOEXEC');
    },
    PAIR_TIMEOUT_MS,
  );

  it(
    'fails a pair that goes through although it is declared refused',
    async () => {
      // The build reads stamp-v1, but the declaration forgot it.
      const forgetful: HandlerVersion = { ...V2, name: '2.0-forgetful', reads: ['stamp-v2'] };
      const verdict = await checkVersionPair(matrix([V1, forgetful]), '1.0', '2.0-forgetful');
      expect(verdict).toMatchObject({
        expected: 'refused',
        outcome: 'updated',
        format: 'stamp-v1',
        passed: false,
      });
      expect(verdict.message).toMatch(
        /^1\.0 → 2\.0-forgetful: declared to be refused before the blackout \(1\.0 writes stamp-v1; 2\.0-forgetful reads stamp-v2\), but CHECK_KEXEC said the loaded kernel reads everything; the kexec went through, written as stamp-v1$/,
      );
    },
    PAIR_TIMEOUT_MS,
  );

  it(
    'fails a pair whose writer labels its state with the format asked for but writes another',
    async () => {
      const liar: HandlerVersion = {
        ...V2,
        name: '2.0-ignores-format',
        modules: [fixture('stamp-v2-ignores-format-module.js')],
      };
      const verdict = await checkVersionPair(matrix([V1, liar]), '2.0-ignores-format', '1.0');
      // LUO labels the file stamp-v1, as asked; the bytes are stamp-v2's, which 1.0 refuses.
      expect(verdict).toMatchObject({ outcome: 'updated', format: 'stamp-v1', passed: false });
      expect(verdict.message).toContain(
        ', but retrieving session "matrix" token 1 in 1.0 failed: EIO (stamp: stamp-v1 state at 0x',
      );
    },
    PAIR_TIMEOUT_MS,
  );
});

describe('version matrix options', () => {
  const call = (options: unknown) => checkVersionMatrix(options as VersionMatrixOptions);

  it('refuses an unknown option, naming it and the options there are', async () => {
    await expect(call({ ...matrix([V1]), handlerCompatible: 'stamp-v1' })).rejects.toThrow(
      /^checkVersionMatrix: unknown option "handlerCompatible"; the options are name, versions,/,
    );
  });

  it('refuses two versions with the same name', async () => {
    await expect(call(matrix([V1, { ...V2, name: '1.0' }]))).rejects.toThrow(
      'checkVersionMatrix: versions[1]: the name "1.0" is used twice; each version needs its own',
    );
  });

  it('refuses a version that does not read the first format it writes', async () => {
    await expect(call(matrix([{ ...V2, reads: ['stamp-v1'] }]))).rejects.toThrow(
      'checkVersionMatrix: versions[0]: reads must include writes[0] ("stamp-v2")',
    );
  });

  it('refuses a version without modules', async () => {
    await expect(call(matrix([{ ...V1, modules: [] }]))).rejects.toThrow(
      /^checkVersionMatrix: versions\[0\]: modules must list the module specifiers/,
    );
  });

  it('refuses a pair of versions it was not given', async () => {
    await expect(checkVersionPair(matrix([V1, V2]), '1.0', '9.9')).rejects.toThrow(
      "checkVersionPair: no pair '1.0' → '9.9'; the versions are 1.0, 2.0",
    );
  });
});
