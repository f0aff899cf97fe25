import type { MemcachedFigures } from './memcached-accounting.js';
import type { DemoStep } from './demo-report.js';
import type { VmLiveUpdate } from './live-update-host.js';

/** Whether the demo's checks held, and if not, which failed: the last line of the text output. */
export interface DemoVerdict {
  readonly pass: boolean;
  /** What failed, one sentence each, prefixed by the update (`6.18.0 → 6.18.1: …`); empty on a pass. */
  readonly reasons: readonly string[];
}

const count = (value: number): string => value.toLocaleString('en-US');

/**
 * Drops are a failure only while the guest was paused for less than the ring holds
 * (`ringHeadroomMs`): then the ring should have outlasted the blackout. A machine loaded enough
 * to stretch the pause past it drops packets as real hardware would; that is reported, not failed.
 */
export function dropsUnexplained(vm: VmLiveUpdate, ringHeadroomMs: number): boolean {
  return vm.dma.packetsDropped > 0 && vm.guestPausedMs < ringHeadroomMs;
}

/** The verdict on every step of a run: each check that failed is one reason. */
export function demoVerdict(steps: readonly DemoStep[], ringHeadroomMs: number): DemoVerdict {
  const reasons: string[] = [];
  // The demo's machine cold-boots its first kernel: the nth update leaves a count of n.
  let updates = 0;
  for (const step of steps) {
    const { host } = step;
    const name =
      step.outcome === 'refused'
        ? `${step.refusal.from} → ${step.refusal.to} (refused)`
        : `${step.update.from} → ${step.update.to}`;
    const fail = (what: string): void => {
      reasons.push(`${name}: ${what}`);
    };
    if (host.cache.mismatches > 0) {
      fail(`${count(host.cache.mismatches)} keys of the cache came back wrong`);
    }
    if (!host.ring.ok) {
      fail(
        `the guest's ring is broken (${count(host.ring.missing)} missing, ${count(host.ring.outOfOrder)} ` +
          `out of order, ${count(host.ring.badChecksum)} bad checksums, ` +
          `${count(host.ring.takenAfterResume)} packets taken after resuming)`,
      );
    }
    if (host.guestMemory.mismatches > 0) {
      fail(`${count(host.guestMemory.mismatches)} stamped pages of guest memory changed`);
    }
    if (step.outcome === 'refused') {
      if (step.dmaAfterRefusal.packetsDelivered === 0) {
        fail('the NIC delivered nothing after the refusal');
      }
      if (step.dmaAfterRefusal.iommuFaults > 0) {
        fail(
          `${count(step.dmaAfterRefusal.iommuFaults)} IOMMU faults of the NIC after the refusal`,
        );
      }
      continue;
    }
    if (!step.update.firstKeyOk) fail('the first key answered after the update had a wrong value');
    updates++;
    const { kernel } = step;
    if (kernel.previousVersion !== step.update.from || kernel.kexecCount !== updates) {
      fail(
        `the new kernel remembers update ${String(kernel.kexecCount)} from ${String(kernel.previousVersion)}, ` +
          `not update ${updates} from ${step.update.from} (${kernel.history})`,
      );
    }
    for (const failure of kernel.failures) fail(`the new kernel recorded a failure: ${failure}`);
    if (step.vm.dma.iommuFaults > 0) {
      fail(`${count(step.vm.dma.iommuFaults)} IOMMU faults of the NIC during the update`);
    }
    if (dropsUnexplained(step.vm, ringHeadroomMs)) {
      fail(
        `the NIC dropped ${count(step.vm.dma.packetsDropped)} packets while the guest was paused ` +
          `${step.vm.guestPausedMs.toFixed(2)} ms, less than the ${ringHeadroomMs.toFixed(2)} ms the ring holds`,
      );
    }
  }
  return { pass: reasons.length === 0, reasons };
}

/**
 * The reasons the memcached clients' figures fail a run: a wrong value, a lost acknowledged
 * write, or no request served at all.
 */
export function memcachedFailures(figures: MemcachedFigures): string[] {
  const reasons: string[] = [];
  if (figures.requests === 0) reasons.push('memcached: no client request was served');
  if (figures.wrongValues > 0) {
    reasons.push(`memcached: ${count(figures.wrongValues)} gets returned a wrong value`);
  }
  if (figures.lostWrites > 0) {
    reasons.push(`memcached: ${count(figures.lostWrites)} acknowledged writes were not read back`);
  }
  return reasons;
}

/** `verdict` with the memcached clients' failures added. */
export function withMemcachedVerdict(verdict: DemoVerdict, figures: MemcachedFigures): DemoVerdict {
  const reasons = [...verdict.reasons, ...memcachedFailures(figures)];
  return { pass: reasons.length === 0, reasons };
}
