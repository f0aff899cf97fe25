import { describe, expect, it } from 'vitest';
import type { DemoStep } from './demo-report.js';
import { demoVerdict, memcachedFailures, withMemcachedVerdict } from './demo-verdict.js';

const RING_HEADROOM_MS = 819;

const intactHost = {
  cache: { verified: 10, mismatches: 0 },
  ring: {
    sequences: 900,
    missing: 0,
    outOfOrder: 0,
    badChecksum: 0,
    takenAfterResume: 200,
    ok: true,
  },
  guestMemory: { pages: 5, mismatches: 0 },
};

/** The fields of an updated step the verdict reads; `change` overrides some. */
function updated(
  change: {
    host?: object;
    firstKeyOk?: boolean;
    dma?: object;
    guestPausedMs?: number;
    kernel?: object;
    count?: number;
  } = {},
): DemoStep {
  return {
    outcome: 'updated',
    update: { from: '6.18.0', to: '6.18.1', firstKeyOk: change.firstKeyOk ?? true },
    kernel: {
      history: 'received',
      kexecCount: change.count ?? 1,
      previousVersion: '6.18.0',
      failures: [],
      ...change.kernel,
    },
    vm: {
      guestPausedMs: change.guestPausedMs ?? 40,
      dma: { packetsDropped: 0, iommuFaults: 0, ...change.dma },
    },
    host: { ...intactHost, ...change.host },
  } as unknown as DemoStep;
}

function refused(dmaAfterRefusal: object): DemoStep {
  return {
    outcome: 'refused',
    refusal: { from: '6.18.0', to: '6.19.0-novfio' },
    dmaAfterRefusal: {
      packetsDelivered: 10,
      packetsDropped: 0,
      iommuFaults: 0,
      ...dmaAfterRefusal,
    },
    host: intactHost,
  } as unknown as DemoStep;
}

describe('demoVerdict', () => {
  it('passes with no reasons when every check held', () => {
    expect(demoVerdict([updated(), refused({}), updated({ count: 2 })], RING_HEADROOM_MS)).toEqual({
      pass: true,
      reasons: [],
    });
  });

  it('names the update and what failed, one reason per failed check', () => {
    const verdict = demoVerdict(
      [
        updated(),
        updated({
          count: 2,
          host: {
            cache: { verified: 10, mismatches: 3 },
            guestMemory: { pages: 5, mismatches: 1 },
          },
          firstKeyOk: false,
          dma: { iommuFaults: 2 },
        }),
      ],
      RING_HEADROOM_MS,
    );
    expect(verdict.pass).toBe(false);
    expect(verdict.reasons).toEqual([
      '6.18.0 → 6.18.1: 3 keys of the cache came back wrong',
      '6.18.0 → 6.18.1: 1 stamped pages of guest memory changed',
      '6.18.0 → 6.18.1: the first key answered after the update had a wrong value',
      '6.18.0 → 6.18.1: 2 IOMMU faults of the NIC during the update',
    ]);
  });

  it('fails drops only while the guest was paused for less than the ring holds', () => {
    const dropped = { packetsDropped: 7 };
    expect(
      demoVerdict([updated({ dma: dropped, guestPausedMs: 900 })], RING_HEADROOM_MS).pass,
    ).toBe(true);
    expect(
      demoVerdict([updated({ dma: dropped, guestPausedMs: 40 })], RING_HEADROOM_MS).reasons,
    ).toEqual([
      '6.18.0 → 6.18.1: the NIC dropped 7 packets while the guest was paused 40.00 ms, less than the 819.00 ms the ring holds',
    ]);
  });

  it('fails an update the new kernel does not remember as the one it was, or that recorded a failure', () => {
    expect(
      demoVerdict(
        [
          updated(),
          updated({ kernel: { previousVersion: '6.17.9', history: 'received: update 2' } }),
          updated({
            count: 3,
            kernel: { failures: ['LUO: session "vm0" token 2: retrieve failed'] },
          }),
        ],
        RING_HEADROOM_MS,
      ).reasons,
    ).toEqual([
      '6.18.0 → 6.18.1: the new kernel remembers update 1 from 6.17.9, not update 2 from 6.18.0 (received: update 2)',
      '6.18.0 → 6.18.1: the new kernel recorded a failure: LUO: session "vm0" token 2: retrieve failed',
    ]);
  });

  it('fails a broken ring and a refusal after which the NIC went quiet', () => {
    const broken = { ...intactHost.ring, missing: 4, ok: false };
    expect(
      demoVerdict(
        [updated({ host: { ring: broken } }), refused({ packetsDelivered: 0 })],
        RING_HEADROOM_MS,
      ).reasons,
    ).toEqual([
      "6.18.0 → 6.18.1: the guest's ring is broken (4 missing, 0 out of order, 0 bad checksums, 200 packets taken after resuming)",
      '6.18.0 → 6.19.0-novfio (refused): the NIC delivered nothing after the refusal',
    ]);
  });
});

describe('the memcached verdict', () => {
  const clean = { requests: 900, clientErrors: 40, outageMs: 120, wrongValues: 0, lostWrites: 0 };

  it('passes requests served with client errors and an outage, but nothing wrong or lost', () => {
    expect(memcachedFailures(clean)).toEqual([]);
    expect(withMemcachedVerdict({ pass: true, reasons: [] }, clean)).toEqual({
      pass: true,
      reasons: [],
    });
  });

  it('fails wrong values, lost writes and a run that served nothing, after the steps’ reasons', () => {
    expect(memcachedFailures({ ...clean, wrongValues: 2 })).toEqual([
      'memcached: 2 gets returned a wrong value',
    ]);
    expect(memcachedFailures({ ...clean, lostWrites: 1 })).toEqual([
      'memcached: 1 acknowledged writes were not read back',
    ]);
    expect(memcachedFailures({ ...clean, requests: 0 })).toEqual([
      'memcached: no client request was served',
    ]);
    expect(
      withMemcachedVerdict(
        { pass: false, reasons: ['6.18.0 → 6.18.1: x'] },
        { ...clean, lostWrites: 3 },
      ),
    ).toEqual({
      pass: false,
      reasons: ['6.18.0 → 6.18.1: x', 'memcached: 3 acknowledged writes were not read back'],
    });
  });
});
