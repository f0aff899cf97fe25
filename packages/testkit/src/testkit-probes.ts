import type { HandlerOp } from '@liveupdate/core';
import type { Process } from '@liveupdate/machine';

/** What {@link describeHandler} answers. */
export interface HandlerDescription {
  readonly compatible: string;
  /** The ops the handler implements, required and optional. */
  readonly ops: readonly HandlerOp[];
}

/** What {@link probeCanPreserve} answers. */
export interface CanPreserveProbe {
  /**
   * The distinct answers, in the order first seen; a non-boolean answer (a Promise: the handler
   * waited) as its `typeof`.
   */
  readonly answers: readonly (boolean | string)[];
}

/** Whether `fdA` and `fdB` of `process` refer to one open file (Linux: `kcmp(KCMP_FILE)`). */
export async function sameFile(process: Process, fdA: number, fdB: number): Promise<boolean> {
  return (await process.syscall('testkit_same_file', fdA, fdB)) as boolean;
}

/** The ops the handler `compatible` implements (`ENOENT` when no such handler is registered). */
export async function describeHandler(
  process: Process,
  compatible: string,
): Promise<HandlerDescription> {
  return (await process.syscall('testkit_handler', compatible)) as HandlerDescription;
}

/**
 * Call the handler's `canPreserve` on the file at `fd` `times` times, in the kernel: its distinct
 * answers.
 */
export async function probeCanPreserve(
  process: Process,
  compatible: string,
  fd: number,
  times: number,
): Promise<CanPreserveProbe> {
  return (await process.syscall('testkit_can_preserve', compatible, fd, times)) as CanPreserveProbe;
}
