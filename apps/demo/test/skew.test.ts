import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { reportSchemaErrors } from './report-schema.js';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const KEYS = 20_000;

interface RingCheck {
  sequences: number;
  missing: number;
  outOfOrder: number;
  badChecksum: number;
  takenAfterResume: number;
  ok: boolean;
}
interface GuestMemory {
  pages: number;
  mismatches: number;
}
interface Cache {
  keys: number;
  verified: number;
  mismatches: number;
}
interface Updated {
  from: string;
  to: string;
  outcome: 'updated';
  reason: null;
  formats: Record<string, string>;
  luo: string;
  blackoutMs: number;
  cache: Cache;
  vm: { ring: RingCheck; guestMemory: GuestMemory; guestPausedMs: number };
  dma: {
    packetsSent: number;
    packetsDelivered: number;
    packetsDropped: number;
    iommuFaults: number;
    deliveredDuringBlackout: number;
  };
}
interface Refused {
  from: string;
  to: string;
  outcome: 'refused';
  reason: string[];
  formats: Record<string, string>;
  luo: null;
  errno: string;
  cache: Cache;
  vm: { ring: RingCheck; guestMemory: GuestMemory };
  dmaAfterRefusal: { packetsDelivered: number; packetsDropped: number; iommuFaults: number };
}
type Entry = Updated | Refused;

/**
 * What each step writes: the first of the writer's formats its target reads. 6.18.0's memfd
 * writes only memfd-v2; 6.19.x's writes memfd-v3 first, which 6.19.1 reads, but 6.18.0 reads only
 * v2, so the rollback carries memfd-v2; the agent's manifest (`luod/1`) is a memfd too. The other
 * handlers have one format each.
 */
const written = (memfd: string) => ({
  'kv-cache/1': memfd,
  'luod/1': memfd,
  'vm0/1': memfd,
  'vm0/2': 'iommufd-v1',
  'vm0/3': 'vfio-pci-v1',
});

describe('pnpm demo --scenario skew --json', () => {
  let report: unknown;
  let entries: Entry[];

  beforeAll(async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        MAIN,
        '--scenario',
        'skew',
        '--json',
        '--mib',
        '16',
        '--keys',
        `${KEYS}`,
        '--guest-mib',
        '64',
      ],
      { encoding: 'utf8' },
    );
    report = JSON.parse(stdout);
    entries = (report as { liveUpdates: Entry[] }).liveUpdates;
  });

  it('reports by report.schema.json, the refusal included, and passes: a refusal is no failure', () => {
    expect(reportSchemaErrors(report)).toBeNull();
    expect((report as { verdict: unknown }).verdict).toEqual({ pass: true, reasons: [] });
  });

  const updated = (from: string, to: string): Updated => {
    const entry = entries.find((e) => e.from === from && e.to === to);
    if (entry?.outcome !== 'updated') throw new Error(`no update ${from} → ${to} in the report`);
    return entry;
  };

  it('updates to 6.19.0 and 6.19.1, rolls back to 6.18.0, and is refused the kernel without vfio-pci', () => {
    expect(entries.map((e) => `${e.from} → ${e.to}: ${e.outcome}`)).toEqual([
      '6.18.0 → 6.19.0: updated',
      '6.19.0 → 6.19.1: updated',
      '6.19.1 → 6.18.0: updated',
      '6.18.0 → 6.19.0-novfio: refused',
    ]);
  });

  it('writes every file in a format its target reads, read from the handover bytes', () => {
    expect(updated('6.18.0', '6.19.0').formats).toEqual(written('memfd-v2'));
    expect(updated('6.19.0', '6.19.1').formats).toEqual(written('memfd-v3'));
    expect(updated('6.19.1', '6.18.0').formats).toEqual(written('memfd-v2'));
    // LUO's own ABI: 6.18.0's core reads and writes only luo-v1.
    expect(entries.map((e) => e.luo)).toEqual(['luo-v1', 'luo-v2', 'luo-v1', null]);
  });

  it('keeps the NIC delivering into guest RAM through the rollback, and the guest RAM intact', () => {
    const rollback = updated('6.19.1', '6.18.0');
    // The NIC's own counters: it delivered while the guest was paused across the kexec.
    expect(rollback.dma.deliveredDuringBlackout).toBeGreaterThan(0);
    expect(rollback.dma.packetsDelivered).toBeGreaterThan(rollback.dma.deliveredDuringBlackout);
    expect(rollback.dma.iommuFaults).toBe(0);
    // The guest's ring in guest RAM: every packet in order with its checksum, and more after.
    expect(rollback.vm.ring.ok).toBe(true);
    expect(rollback.vm.ring.outOfOrder + rollback.vm.ring.badChecksum).toBe(0);
    expect(rollback.vm.ring.takenAfterResume).toBeGreaterThanOrEqual(200);
    // The guest's own pages, stamped at boot, came back as they were.
    expect(rollback.vm.guestMemory.pages).toBeGreaterThan(0);
    expect(rollback.vm.guestMemory.mismatches).toBe(0);
  });

  it('keeps the cache and the VM intact after every update', () => {
    for (const entry of entries.filter((e): e is Updated => e.outcome === 'updated')) {
      expect(entry.reason).toBeNull();
      expect(entry.cache).toEqual({ keys: KEYS, verified: KEYS, mismatches: 0 });
      expect(entry.vm.ring.ok).toBe(true);
      expect(entry.vm.guestMemory.mismatches).toBe(0);
      expect(entry.dma.iommuFaults).toBe(0);
    }
  });

  it('refuses the kernel without vfio-pci with ENOEXEC, naming the NIC it cannot read', () => {
    const refused = entries.at(-1) as Refused;
    expect(refused.errno).toBe('ENOEXEC');
    // Only the NIC's cdev: that kernel still reads memfd and iommufd.
    expect(refused.reason).toHaveLength(1);
    expect(refused.reason[0]).toMatch(/session "vm0" token 3: vfio-pci-v1\b/);
    // Nothing was written for it.
    expect(refused.formats).toEqual({});
  });

  it('checks the cache and the VM after the refusal, the NIC still delivering', () => {
    const refused = entries.at(-1) as Refused;
    expect(refused.cache).toEqual({ keys: KEYS, verified: KEYS, mismatches: 0 });
    expect(refused.dmaAfterRefusal.packetsDelivered).toBeGreaterThan(0);
    expect(refused.dmaAfterRefusal.iommuFaults).toBe(0);
    expect(refused.vm.ring.ok).toBe(true);
    expect(refused.vm.ring.takenAfterResume).toBeGreaterThanOrEqual(200);
    expect(refused.vm.guestMemory.pages).toBeGreaterThan(0);
    expect(refused.vm.guestMemory.mismatches).toBe(0);
    // The guest's ring ran on from the rollback, in the same VM, without a reset.
    const rollback = updated('6.19.1', '6.18.0');
    expect(refused.vm.ring.sequences).toBeGreaterThan(rollback.vm.ring.sequences);
  });
});
