// KHO's kho-v2 checksums at the KHO/LUO boundary: the LUO FDT is covered by its subtree's
// blob-crc, and LUO's own check of where that blob lies still holds once KHO is resealed.
import { describe, expect, it } from 'vitest';
import { FDT_HEADER_SIZE, decodeFdt, fdtValueOffset, readFdtHeader } from '@liveupdate/fdt';
import { MachineHaltedError, hex, type PhysicalMemory } from '@liveupdate/machine';
import { luoFdtLocation, sealKhoHandover } from '@liveupdate/testkit';
import { boot, openDevice, preserveNote } from './helpers.js';

/** Where the value of property `name` of child `node` (or the root's) lies in the FDT at `phys`, in physical memory. */
function valueAt(memory: PhysicalMemory, phys: number, node: string | null, name: string): number {
  const { totalSize } = readFdtHeader(memory.read(phys, FDT_HEADER_SIZE));
  const root = decodeFdt(memory.read(phys, totalSize)).root;
  const owner = node === null ? root : root.children.find((c) => c.name === node)!;
  return phys + fdtValueOffset(owner.properties.find((p) => p.name === name)!)!;
}

/** Boot with `corrupt` run on the handover, preserve one note in session "s", and live-update. */
async function liveUpdateCorrupted(corrupt: (memory: PhysicalMemory, khoFdtPhys: number) => void) {
  const harness = await boot({
    onHandover: ({ memory, khoFdtPhys }) => corrupt(memory, khoFdtPhys!),
  });
  await preserveNote(await (await openDevice(harness.process)).createSession('s'), 1, 'data');
  const outcome = await harness.liveUpdate().catch((error: unknown) => error);
  return { harness, outcome };
}

describe('the LUO FDT under a kho-v2 root', () => {
  it("panics the new kernel, naming KHO's LUO subtree, when only liveupdate-number changed", async () => {
    let phys = 0;
    const { harness, outcome } = await liveUpdateCorrupted((memory, khoFdtPhys) => {
      phys = luoFdtLocation(memory, khoFdtPhys).phys;
      const at = valueAt(memory, phys, null, 'liveupdate-number');
      // A little-endian u64: one more live update than there were. A value LUO cannot check.
      memory.writeU64(at, memory.readU64(at) + 1n);
    });
    expect(MachineHaltedError.isInstance(outcome)).toBe(true);
    expect(harness.machine.panicReason).toMatch(
      /^KHO: subtree "LUO" blob-crc 0x[0-9a-f]+ does not match its blob \(0x[0-9a-f]+\)$/,
    );
    expect(phys).toBeGreaterThan(0);
    // KHO panicked before LUO read anything.
    expect(harness.machine.dmesg(1)).not.toMatch(/LUO: /);
  });

  it('panics the new kernel, naming LUO, when preserved-data is not the start of a preserved allocation', async () => {
    let moved = 0;
    let blobSize = 0;
    const { harness, outcome } = await liveUpdateCorrupted((memory, khoFdtPhys) => {
      const { phys, size } = luoFdtLocation(memory, khoFdtPhys);
      blobSize = size;
      // 8 bytes further into the same preserved folio: KHO's checks pass (it is preserved
      // memory), and the resealed blob-crc matches; only LUO knows where its writer puts it.
      moved = phys + 8;
      expect(size + 8).toBeLessThan(4096);
      const at = valueAt(memory, khoFdtPhys, 'LUO', 'preserved-data');
      memory.writeU64(at, BigInt(moved));
      sealKhoHandover(memory, khoFdtPhys);
    });
    expect(MachineHaltedError.isInstance(outcome)).toBe(true);
    expect(harness.machine.panicReason).toBe(
      `LUO: LUO FDT: ${hex(moved)} is not a preserved allocation of ${blobSize} bytes (no preserved folio starts there)`,
    );
  });
});
