import { luoFileSer, luoSessionHeaderSer, luoSessionSer } from '@liveupdate/core';
import type { PhysicalMemory } from '@liveupdate/machine';
import { readLuoFdt, sealLuoHandover } from '@liveupdate/testkit';

/**
 * Recompute every checksum of a damaged handover, as a hostile writer that knows the format
 * would, so that the readers' field checks behind the checksums are what must catch the damage.
 * Today that is LUO's (`luo-v2`: each file's `data_crc`, each session's `files_crc`, the session
 * table's and the FLB table's crcs in the LUO FDT).
 *
 * Throws an `Error` saying why when the damage left nothing a writer could seal: a LUO FDT that
 * no longer decodes, or a session or file table that does not fit in RAM (a count the damage
 * made huge); the handover then stays as damaged, and its checksums catch it.
 */
export function reseal(memory: PhysicalMemory, khoFdtPhys: number): void {
  const fdt = readLuoFdt(memory, khoFdtPhys);
  if (fdt.version === 2) {
    // sealLuoHandover walks the tables by their counts: make sure they are tables at all first.
    const header = Number(fdt.sessionHeaderPhys);
    const inRam = (phys: number, count: bigint, size: number) =>
      count <= BigInt(memory.size) && memory.contains(phys, Number(count) * size);
    const count = memory.contains(header, 8) ? memory.readU64(header) : -1n;
    if (count < 0n || !inRam(header + luoSessionHeaderSer.size, count, luoSessionSer.size))
      throw new Error(`luo_session_header_ser.count ${count} reaches past RAM`);
    for (let s = 0; s < Number(count); s++) {
      const phys = header + luoSessionHeaderSer.size + s * luoSessionSer.size;
      const session = luoSessionSer.decode(memory.read(phys, luoSessionSer.size));
      if (!inRam(Number(session.files), session.count, luoFileSer.size))
        throw new Error(`luo_session_ser[${s}]'s ${session.count} files reach past RAM`);
    }
  }
  sealLuoHandover(memory, khoFdtPhys);
}
