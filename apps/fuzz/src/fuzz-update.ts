import { LiveUpdateDevice } from '@liveupdate/core';
import {
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_GROW,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  KernelError,
  MFD_ALLOW_SEALING,
  MachineHaltedError,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
  type HandoverEvent,
  type Process,
} from '@liveupdate/machine';
import { bootForLiveUpdate, type LiveUpdateHarness } from '@liveupdate/testkit';
import { mapHandover } from './handover-map.js';
import type { MutationFamily } from './mutation-families.js';
import { Random, updateSeed } from './random.js';

/** How one damaged live update ended. */
export const OUTCOMES = [
  /** The new kernel panicked, saying why. */
  'panic',
  /** Something failed with an errno and the new kernel logged what was wrong. */
  'errno',
  /** Something failed with an errno, but the new kernel logged no warning or error. */
  'errno-unlogged',
  /** Everything came back byte for byte: the damage did not matter. */
  'intact',
  /** A retrieve succeeded with wrong data, size, position or seals. */
  'silent-misread',
  /** The update or the retrieves did not end within the bound. */
  'hang',
  /** The host (the machine, a worker, the fuzzer) failed. */
  'host-failure',
  /** The family found nothing to damage in this handover. */
  'skipped',
] as const;
export type Outcome = (typeof OUTCOMES)[number];

export interface UpdateResult {
  readonly index: number;
  readonly family: string;
  readonly mutation: string | null;
  readonly outcome: Outcome;
  /** Why: the panic reason, the errnos, or what was misread. */
  readonly detail: string;
  /** The new kernel's log, for a replayed update. */
  readonly dmesg?: string;
}

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

/** Bound of one update, from boot to the last check; far more than it takes on a busy machine. */
export const UPDATE_TIMEOUT_MS = 60_000;

export interface FuzzUpdateOptions {
  readonly seed: number;
  readonly index: number;
  readonly family: MutationFamily;
  /** Keep the new kernel's log in the result. */
  readonly keepDmesg?: boolean;
}

/**
 * One damaged live update: boot a kernel with the memfd handler (the family's
 * {@link MutationFamily.memfdModule}, or the newest), preserve {@link SHAPES} with
 * random contents, damage the handover between the kernels with `family`, then retrieve every
 * session and file in the new kernel and compare them byte for byte with what was preserved.
 */
export async function fuzzUpdate(options: FuzzUpdateOptions): Promise<UpdateResult> {
  const random = new Random(updateSeed(options.seed, options.index));
  const base = { index: options.index, family: options.family.name };
  let mutation: string | null = null;
  let harness: LiveUpdateHarness | undefined;
  const run = async (): Promise<UpdateResult> => {
    harness = await bootForLiveUpdate({
      modules: [options.family.memfdModule ?? '@liveupdate/plugin-memfd'],
      moduleBase: import.meta.url,
      onHandover: ({ memory, khoFdtPhys }: HandoverEvent) => {
        if (khoFdtPhys === null) throw new Error('the old kernel handed over no KHO root');
        const map = mapHandover(memory, khoFdtPhys);
        mutation = options.family.apply({ memory, map, random });
      },
    });
    const machine = harness.machine;
    const preserved = await preserve(harness.process, random);
    let next: Process;
    try {
      next = await harness.liveUpdate();
    } catch (error) {
      if (MachineHaltedError.isInstance(error)) return panic();
      throw error;
    }
    const newBoot = machine.bootCount - 1;
    let found: { misread: string[]; failed: string[] };
    try {
      found = await retrieveAll(next, preserved);
    } catch (error) {
      if (MachineHaltedError.isInstance(error)) return panic();
      throw error;
    }
    const dmesg = options.keepDmesg ? { dmesg: machine.dmesg(newBoot) } : {};
    if (mutation === null) return { ...base, mutation, outcome: 'skipped', detail: '', ...dmesg };
    if (found.misread.length > 0) {
      return {
        ...base,
        mutation,
        outcome: 'silent-misread',
        detail: found.misread.join('; '),
        ...dmesg,
      };
    }
    if (found.failed.length > 0) {
      const logged = machine.timeline.some(
        (e) => e.kind === 'log' && e.boot === newBoot && e.level <= 4,
      );
      return {
        ...base,
        mutation,
        outcome: logged ? 'errno' : 'errno-unlogged',
        detail: found.failed.join('; '),
        ...dmesg,
      };
    }
    return { ...base, mutation, outcome: 'intact', detail: '', ...dmesg };

    function panic(): UpdateResult {
      return {
        ...base,
        mutation,
        outcome: mutation === null ? 'skipped' : 'panic',
        detail: machine.panicReason ?? '(no reason)',
        ...(options.keepDmesg ? { dmesg: machine.dmesg(machine.bootCount - 1) } : {}),
      };
    }
  };
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<UpdateResult>((resolve) => {
    timer = setTimeout(
      () =>
        resolve({
          ...base,
          mutation,
          outcome: 'hang',
          detail: `no end after ${UPDATE_TIMEOUT_MS / 1000} s`,
        }),
      UPDATE_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([run(), timeout]);
  } catch (error) {
    return {
      ...base,
      mutation,
      outcome: 'host-failure',
      detail: String((error as Error)?.stack ?? error),
    };
  } finally {
    clearTimeout(timer);
    await (harness as LiveUpdateHarness | undefined)?.shutdown();
  }
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
): Promise<{ misread: string[]; failed: string[] }> {
  const misread: string[] = [];
  const failed: string[] = [];
  const attempt = async <T>(what: string, op: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await op();
    } catch (error) {
      if (!KernelError.isInstance(error)) throw error;
      failed.push(`${what}: ${error.code}`);
      return undefined;
    }
  };
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
