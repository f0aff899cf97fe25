import { median } from './cold-update-note.js';
import type { DemoStep, UpdatedStep } from './demo-report.js';
import { textTable } from './text-table.js';

/** The columns of `--quiet`, after the update's own (from → to). */
export const QUIET_COLUMNS = [
  'cache blackout ms',
  'VM blackout ms',
  'guest paused ms',
  'dropped',
  'keys verified',
  'kexecs',
] as const;

const fixed = (value: number): string => value.toFixed(2);
const count = (value: number): string => value.toLocaleString('en-US');

/** Each column's figure for one update, and how it is printed. */
const FIGURES: readonly [pick: (step: UpdatedStep) => number, print: (value: number) => string][] =
  [
    [(s) => s.update.blackoutMs, fixed],
    [(s) => s.vm.blackoutMs, fixed],
    [(s) => s.vm.guestPausedMs, fixed],
    [(s) => s.vm.dma.packetsDropped, count],
    [(s) => s.host.cache.verified, count],
  ];

/**
 * `--quiet`: one row per step of the chain (a refused one says so), then, over the updates that
 * happened, a row of each column's median and a row of its spread (`min–max`). `kexecs` is the
 * new kernel's count of live updates since the cold boot: a sequence, not a measure, so it has
 * no median.
 */
export function quietTable(steps: readonly DemoStep[]): string {
  const updated = steps.filter((step): step is UpdatedStep => step.outcome === 'updated');
  const rows = steps.map((step) => {
    if (step.outcome === 'refused') {
      const { refusal } = step;
      // The kernel stayed, so its keys were verified; there was no blackout to measure.
      return [
        `${refusal.from} → ${refusal.to}`,
        `refused (${refusal.code})`,
        '—',
        '—',
        '—',
        count(step.host.cache.verified),
        '—',
      ];
    }
    const kexecCount = step.kernel.kexecCount;
    return [
      `${step.update.from} → ${step.update.to}`,
      ...FIGURES.map(([pick, print]) => print(pick(step))),
      kexecCount === null ? 'lost' : count(kexecCount),
    ];
  });
  if (updated.length > 1) {
    const columns = FIGURES.map(([pick, print]) => ({ values: updated.map(pick), print }));
    rows.push(
      [
        `median of ${updated.length} updates`,
        ...columns.map(({ values, print }) => print(median(values))),
        '',
      ],
      [
        '  spread (min–max)',
        ...columns.map(
          ({ values, print }) => `${print(Math.min(...values))}–${print(Math.max(...values))}`,
        ),
        '',
      ],
    );
  }
  return textTable(['update', ...QUIET_COLUMNS], rows);
}
