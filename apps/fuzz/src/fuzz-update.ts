import { MachineHaltedError, type HandoverEvent, type Process } from '@liveupdate/machine';
import { bootForLiveUpdate, type LiveUpdateHarness } from '@liveupdate/testkit';
import { mapHandover } from './handover-map.js';
import { memfdScenario } from './memfd-scenario.js';
import type { MutationFamily } from './mutation-families.js';
import { Random, updateSeed } from './random.js';
import { reseal } from './reseal.js';
import type { Verdict } from './scenario.js';

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
  /** A retrieve succeeded with wrong data, size, position or seals, or a device's DMA went astray. */
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

/** Bound of one update, from boot to the last check; far more than it takes on a busy machine. */
export const UPDATE_TIMEOUT_MS = 60_000;
/**
 * Bound of the second run of an update that did not end within {@link UPDATE_TIMEOUT_MS}: an
 * update is seeded, so a real hang hangs again, while one that was only starved of CPU ends.
 */
export const HANG_RETRY_TIMEOUT_MS = 300_000;

export interface FuzzUpdateOptions {
  readonly seed: number;
  readonly index: number;
  readonly family: MutationFamily;
  /**
   * After the damage, recompute every checksum of the handover ({@link reseal}), so that the
   * field checks behind the checksums are what must catch it.
   */
  readonly reseal?: boolean;
  /** Keep the new kernel's log in the result. */
  readonly keepDmesg?: boolean;
  /** The update's bound; default {@link UPDATE_TIMEOUT_MS}. */
  readonly timeoutMs?: number;
}

/**
 * One damaged live update: boot a machine for the family's scenario (its
 * {@link MutationFamily.scenario}, by default {@link memfdScenario}), preserve the scenario's
 * files with seeded random contents, damage the handover between the kernels with `family` (and
 * reseal it, in reseal mode), then retrieve everything in the new kernel and verify it against
 * what was preserved. An update that does not end within {@link UPDATE_TIMEOUT_MS} is run once
 * more with {@link HANG_RETRY_TIMEOUT_MS} (unless `timeoutMs` is given): only one that hangs again
 * is a hang; one that ends says its first run was slow.
 */
export async function fuzzUpdate(options: FuzzUpdateOptions): Promise<UpdateResult> {
  const first = await fuzzUpdateOnce(options);
  if (first.outcome !== 'hang' || options.timeoutMs !== undefined) return first;
  const again = await fuzzUpdateOnce({ ...options, timeoutMs: HANG_RETRY_TIMEOUT_MS });
  if (again.outcome === 'hang') {
    return {
      ...again,
      detail: `no end after ${UPDATE_TIMEOUT_MS / 1000} s, nor after ${HANG_RETRY_TIMEOUT_MS / 1000} s when run again`,
    };
  }
  return {
    ...again,
    detail: `${again.detail} (run again: its first run took over ${UPDATE_TIMEOUT_MS / 1000} s on a busy machine)`,
  };
}

async function fuzzUpdateOnce(options: FuzzUpdateOptions): Promise<UpdateResult> {
  const random = new Random(updateSeed(options.seed, options.index));
  const base = { index: options.index, family: options.family.name };
  const scenario = options.family.scenario ?? memfdScenario();
  let mutation: string | null = null;
  let harness: LiveUpdateHarness | undefined;
  const run = async (): Promise<UpdateResult> => {
    harness = await bootForLiveUpdate({
      modules: scenario.modules,
      moduleBase: import.meta.url,
      ...(scenario.devices ? { devices: scenario.devices } : {}),
      onHandover: ({ memory, khoFdtPhys }: HandoverEvent) => {
        if (khoFdtPhys === null) throw new Error('the old kernel handed over no KHO root');
        const map = mapHandover(memory, khoFdtPhys);
        mutation = options.family.apply({ memory, map, random });
        if (mutation === null || !options.reseal) return;
        try {
          reseal(memory, khoFdtPhys);
          mutation += ', resealed';
        } catch (error) {
          mutation += `, not resealed: ${(error as Error).message}`;
        }
      },
    });
    const machine = harness.machine;
    const preserved = await scenario.preserve(harness.process, random);
    let next: Process;
    try {
      next = await harness.liveUpdate();
    } catch (error) {
      if (MachineHaltedError.isInstance(error)) return panic();
      throw error;
    }
    const newBoot = machine.bootCount - 1;
    let found: Verdict;
    try {
      found = await scenario.verify(next, preserved, machine);
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
  const timeoutMs = options.timeoutMs ?? UPDATE_TIMEOUT_MS;
  const timeout = new Promise<UpdateResult>((resolve) => {
    timer = setTimeout(
      () =>
        resolve({
          ...base,
          mutation,
          outcome: 'hang',
          detail: `no end after ${timeoutMs / 1000} s`,
        }),
      timeoutMs,
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
