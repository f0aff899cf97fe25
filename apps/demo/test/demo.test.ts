import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));

interface Report {
  liveUpdates: {
    from: string;
    to: string;
    outcome: string;
    reason: unknown;
    formats: Record<string, string>;
    blackoutMs: number;
    cache: { keys: number; verified: number; mismatches: number };
    vm: {
      blackoutMs: number;
      guestPausedMs: number;
      ring: { sequences: number; missing: number; outOfOrder: number; badChecksum: number };
      guestMemory: { pages: number; mismatches: number };
    };
    dma: {
      packetsSent: number;
      packetsDelivered: number;
      packetsDropped: number;
      iommuFaults: number;
      maxRingOccupancy: number;
      deliveredDuringBlackout: number;
    };
  }[];
}

it('live-updates the cache and the VM twice and reports what the NIC did (--json)', async () => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [MAIN, '--json', '--updates', '2', '--mib', '16', '--keys', '20000', '--guest-mib', '64'],
    { encoding: 'utf8' },
  );
  const report = JSON.parse(stdout) as Report;
  expect(report.liveUpdates.map((u) => `${u.from} → ${u.to}`)).toEqual([
    '6.18.0 → 6.18.1',
    '6.18.1 → 6.18.2',
  ]);
  for (const update of report.liveUpdates) {
    expect(update.outcome).toBe('updated');
    expect(update.reason).toBeNull();
    // Read from the handover bytes: both memfds in the memfd plugin's format (the same kernel
    // build on both sides writes its newest), the iommufd and the NIC in theirs.
    expect(Object.keys(update.formats).sort()).toEqual(['kv-cache/1', 'vm0/1', 'vm0/2', 'vm0/3']);
    expect(update.formats['kv-cache/1']).toMatch(/^memfd-v\d+$/);
    expect(update.formats['vm0/1']).toBe(update.formats['kv-cache/1']);
    expect(update.formats['vm0/2']).toBe('iommufd-v1');
    expect(update.formats['vm0/3']).toBe('vfio-pci-v1');
    expect(update.cache).toEqual({ keys: 20000, verified: 20000, mismatches: 0 });
    expect(update.vm.guestMemory.pages).toBeGreaterThan(0);
    expect(update.vm.guestMemory.mismatches).toBe(0);
    const { dma, vm } = update;
    expect(dma.iommuFaults).toBe(0);
    // The NIC kept delivering while the guest was paused across the kexec.
    expect(dma.deliveredDuringBlackout).toBeGreaterThan(0);
    // What piled up in the ring while nobody took packets out, and never more than it holds.
    expect(dma.maxRingOccupancy).toBeGreaterThan(0);
    expect(dma.maxRingOccupancy).toBeLessThan(8192);
    expect(vm.ring.outOfOrder + vm.ring.badChecksum).toBe(0);
    expect(vm.blackoutMs).toBeGreaterThanOrEqual(update.blackoutMs);
  }
  // The guest saw, in its own ring, at least every packet the NIC's counters say it delivered
  // during the updates (its count runs from the VM's boot, across both updates).
  const delivered = report.liveUpdates.reduce((sum, u) => sum + u.dma.packetsDelivered, 0);
  expect(report.liveUpdates.at(-1)!.vm.ring.sequences).toBeGreaterThanOrEqual(delivered);
});
