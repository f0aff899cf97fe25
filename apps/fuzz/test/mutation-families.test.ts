// The families themselves: a mutation that writes back what was there is no mutation, and would
// be counted as "intact" as if the kernel had shrugged off real damage.
import { describe, expect, it } from 'vitest';
import { PhysicalMemory } from '@liveupdate/machine';
import type { HandoverMap, Region } from '../src/handover-map.js';
import { MUTATION_FAMILIES } from '../src/mutation-families.js';
import { Random } from '../src/random.js';

const region = (what: string, phys: number): Region => ({ what, phys, size: 64 });

describe('address-elsewhere', () => {
  it('never points a field at the structure it already points at', () => {
    const family = MUTATION_FAMILIES.find((f) => f.name === 'address-elsewhere')!;
    const memory = new PhysicalMemory(new SharedArrayBuffer(4 << 20));
    const sessionHeader = region('luo-session-header', 0x10_000);
    const field = { what: 'luo-fdt.luo-session-header', phys: 0x20_000, size: 8 as const };
    const map = {
      sessionHeader,
      luoFdt: region('luo-fdt', 0x11_000),
      flbTable: region('luo-flb-header', 0x12_000),
      files: [],
      addresses: [field],
    } as unknown as HandoverMap;
    let elsewhere = 0;
    for (let seed = 1; seed <= 300; seed++) {
      memory.writeU64(field.phys, BigInt(sessionHeader.phys));
      const said = family.apply({ memory, map, random: new Random(seed) });
      expect(memory.readU64(field.phys), `seed ${seed}: ${said}`).not.toBe(
        BigInt(sessionHeader.phys),
      );
      if (said?.endsWith('(another structure)')) elsewhere++;
    }
    // The case that could write the same address back was drawn, and more than once.
    expect(elsewhere).toBeGreaterThan(10);
  });
});
