import { describe, expect, it } from 'vitest';
import type { DemoStep } from './demo-report.js';
import { quietTable } from './quiet-table.js';

/** Only the fields the table reads: a whole step is a real run's (test/demo.test.ts has one). */
const updated = (from: string, to: string, blackoutMs: number, kexecCount: number | null) =>
  ({
    outcome: 'updated',
    update: { from, to, blackoutMs },
    vm: { blackoutMs: blackoutMs + 10, guestPausedMs: blackoutMs + 11, dma: { packetsDropped: 0 } },
    host: { cache: { verified: 1000 } },
    kernel: { kexecCount },
  }) as unknown as DemoStep;

const refused = {
  outcome: 'refused',
  refusal: { from: '6.18.0', to: '6.19.0-novfio', code: 'ENOEXEC' },
  host: { cache: { verified: 1000 } },
} as unknown as DemoStep;

const rowsOf = (table: string): string[][] =>
  table
    .split('\n')
    .slice(2)
    .map((line) => line.trim().split(/ {3,}/));

describe('quietTable', () => {
  it('has no median rows for a single update: a median of one says nothing', () => {
    expect(rowsOf(quietTable([updated('6.18.0', '6.18.1', 50, 1)]))).toEqual([
      ['6.18.0 → 6.18.1', '50.00', '60.00', '61.00', '0', '1,000', '1'],
    ]);
  });

  it('says which update was refused, leaves it out of the medians, and says when history is lost', () => {
    const table = quietTable([
      updated('6.18.0', '6.19.0', 40, 1),
      refused,
      updated('6.19.0', '6.18.0', 80, null),
    ]);
    expect(rowsOf(table)).toEqual([
      ['6.18.0 → 6.19.0', '40.00', '50.00', '51.00', '0', '1,000', '1'],
      ['6.18.0 → 6.19.0-novfio', 'refused (ENOEXEC)', '—', '—', '—', '1,000', '—'],
      ['6.19.0 → 6.18.0', '80.00', '90.00', '91.00', '0', '1,000', 'lost'],
      ['median of 2 updates', '60.00', '70.00', '71.00', '0', '1,000'],
      ['spread (min–max)', '40.00–80.00', '50.00–90.00', '51.00–91.00', '0–0', '1,000–1,000'],
    ]);
  });
});
