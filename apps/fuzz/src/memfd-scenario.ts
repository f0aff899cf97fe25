import { LiveUpdateDevice } from '@liveupdate/core';
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_GROW,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MFD_ALLOW_SEALING,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
  type Process,
} from '@liveupdate/machine';
import type { Random } from './random.js';
import type { Scenario, Verdict } from './scenario.js';
import { attempter } from './attempter.js';

interface PreservedFile {
  readonly token: number;
  readonly content: Uint8Array;
  readonly pos: number;
  readonly seals: number;
}

interface PreservedSession {
  readonly name: string;
  readonly files: readonly PreservedFile[];
}

/** The sessions every update preserves: two of them, four memfds of different shapes. */
const SHAPES: readonly (readonly { token: number; size: number; pos: number; seals: number }[])[] =
  [
    [
      { token: 1, size: 3 * 4096 + 100, pos: 777, seals: F_SEAL_GROW | F_SEAL_SHRINK },
      { token: 2, size: 2 * 1024 * 1024 + 8192, pos: 0, seals: 0 },
    ],
    [
      { token: 1, size: 0, pos: 0, seals: 0 },
      { token: 7, size: 4096, pos: 4096, seals: F_SEAL_WRITE },
    ],
  ];

/**
 * The memfd scenario: two sessions of four memfds (sizes from 0 to 2 MiB, with positions and
 * seals) filled with seeded random bytes, preserved by the memfd handler of `module` (the newest,
 * memfd-v3, by default); verified by comparing size, position, seals and every byte.
 */
export function memfdScenario(
  module = '@liveupdate/plugin-memfd',
): Scenario<readonly PreservedSession[]> {
  return { name: 'memfd', modules: [module], preserve, verify: retrieveAll };
}

async function preserve(process: Process, random: Random): Promise<PreservedSession[]> {
  const device = await LiveUpdateDevice.open(process);
  const sessions: PreservedSession[] = [];
  for (const [s, shapes] of SHAPES.entries()) {
    const name = `session-${s}`;
    const session = await device.createSession(name);
    const files: PreservedFile[] = [];
    for (const shape of shapes) {
      const fd = await process.memfdCreate(`file-${shape.token}`, MFD_ALLOW_SEALING);
      const content = Uint8Array.from({ length: shape.size }, () => random.below(256));
      if (shape.size > 0) await process.pwrite(fd, content, 0);
      await process.lseek(fd, shape.pos, SEEK_SET);
      if (shape.seals) await process.fcntl(fd, F_ADD_SEALS, shape.seals);
      await session.preserveFd(fd, shape.token);
      files.push({ token: shape.token, content, pos: shape.pos, seals: shape.seals });
    }
    sessions.push({ name, files });
  }
  return sessions;
}

/**
 * Retrieve every preserved session and file and compare it with what was preserved. An errno is
 * a failure the kernel reported; anything that comes back different is a misread.
 */
async function retrieveAll(
  process: Process,
  sessions: readonly PreservedSession[],
): Promise<Verdict> {
  const misread: string[] = [];
  const failed: string[] = [];
  const attempt = attempter(failed);
  const device = await attempt('open /dev/liveupdate', () => LiveUpdateDevice.open(process));
  if (!device) return { misread, failed };
  for (const preserved of sessions) {
    const session = await attempt(`retrieve ${preserved.name}`, () =>
      device.retrieveSession(preserved.name),
    );
    if (!session) continue;
    for (const file of preserved.files) {
      const where = `${preserved.name} token ${file.token}`;
      const fd = await attempt(`retrieve ${where}`, () => session.retrieveFd(file.token));
      if (fd === undefined) continue;
      const state = await attempt(`read ${where}`, async () => {
        const pos = await process.lseek(fd, 0, SEEK_CUR);
        const seals = await process.fcntl(fd, F_GET_SEALS);
        const size = await process.lseek(fd, 0, SEEK_END);
        const content = size > 0 ? await process.pread(fd, size, 0) : new Uint8Array();
        return { pos, seals, size, content };
      });
      if (!state) continue;
      if (state.size !== file.content.length) {
        misread.push(`${where}: size ${state.size}, preserved ${file.content.length}`);
      } else if (!Buffer.from(state.content).equals(Buffer.from(file.content))) {
        misread.push(`${where}: contents differ`);
      }
      if (state.pos !== file.pos)
        misread.push(`${where}: position ${state.pos}, preserved ${file.pos}`);
      if (state.seals !== file.seals)
        misread.push(`${where}: seals ${state.seals}, preserved ${file.seals}`);
    }
  }
  return { misread, failed };
}
