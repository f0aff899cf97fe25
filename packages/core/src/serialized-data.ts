import type { Folio, KexecHandover } from '@liveupdate/kernel';
import { KernelError, hex, type PhysicalMemory } from '@liveupdate/machine';

/**
 * Helpers for the first steps of a handler's `retrieve` and `finish`, which every handler that
 * keeps its state at `serializedData` takes the same way.
 */

/**
 * `serializedData` as a physical address: `EINVAL` for 0 (the kernel's NULL `KHOSER_LOAD_PTR`)
 * or anything that is not a page of RAM. `owner` names the handler in the message.
 */
export function serializedDataAddress(data: bigint, memory: PhysicalMemory, owner: string): number {
  if (data === 0n) throw new KernelError('EINVAL', `${owner}: no serialized data`);
  if (data % 4096n !== 0n || data >= BigInt(memory.size)) {
    throw new KernelError('EINVAL', `${owner}: serialized data ${hex(data)} is not a page of RAM`);
  }
  return Number(data);
}

/**
 * Take ownership of the preserved folio holding a handler's serialized struct, before reading it
 * (a module reads only memory it owns): `EINVAL` (naming `what`) when `phys` is not a folio the
 * previous kernel preserved with `order` (with any order when `order` is `undefined`: the
 * recorded one, which the caller then checks against what it reads).
 */
export function restoreSerializedFolio(
  kho: KexecHandover,
  phys: number,
  order: number | undefined,
  what: string,
): Folio {
  try {
    return kho.restoreFolio(phys, order);
  } catch (error) {
    throw new KernelError('EINVAL', `${hex(phys)} is not a preserved ${what}`, { cause: error });
  }
}
