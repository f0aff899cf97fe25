import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { DemoReport, LiveUpdateReport } from './demo-report.js';
import type { UpdateTimeline } from './update-timeline.js';

/** What the page inlines so it opens offline: uPlot's script and style sheet, and ours. */
export interface HtmlReportAssets {
  readonly uplotJs: string;
  readonly uplotCss: string;
  readonly chartJs: string;
}

/**
 * The files the page inlines, read at run time: uPlot from the installed package, the script that
 * draws the timelines (`report/timeline-chart.js`) from beside this package's `src`/`dist`.
 */
export function htmlReportAssets(): HtmlReportAssets {
  const require = createRequire(import.meta.url);
  const read = (path: string | URL): string => readFileSync(path, 'utf8');
  return {
    uplotJs: read(require.resolve('uplot/dist/uPlot.iife.min.js')),
    uplotCss: read(require.resolve('uplot/dist/uPlot.min.css')),
    chartJs: read(new URL('../report/timeline-chart.js', import.meta.url)),
  };
}

/** `text` as HTML text or a quoted attribute value. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * JSON for a `<script type="application/json">` block: `<` as `\u003c`, so no `</script>` or
 * `<!--` in a string of the data can end the block.
 */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

/** Inline code in a raw-text element; it must not contain the element's end tag. */
function rawText(tag: 'script' | 'style', text: string, what: string): string {
  if (text.toLowerCase().includes(`</${tag}`)) {
    throw new Error(`cannot inline ${what}: it contains "</${tag}"`);
  }
  return `<${tag}>${text}</${tag}>`;
}

const number = (value: number): string => value.toLocaleString('en-US');
const ms = (value: number): string => value.toFixed(2);

function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const cells = (tag: string, row: readonly string[]): string =>
    `<tr>${row.map((cell) => `<${tag}>${escapeHtml(cell)}</${tag}>`).join('')}</tr>`;
  return `<table><thead>${cells('th', head)}</thead><tbody>${rows.map((row) => cells('td', row)).join('')}</tbody></table>`;
}

function keyValues(head: string, record: Readonly<Record<string, unknown>>): string {
  return table(
    [head, 'value'],
    Object.entries(record).map(([key, value]) => [key, value === null ? 'none' : String(value)]),
  );
}

const list = (items: readonly string[]): string =>
  `<ul>${items.map((item) => `<li>${escapeHtml(item)}</li>`).join('')}</ul>`;

/** A check as a row: what was checked, what was found, and whether it held. */
function checkRows(update: LiveUpdateReport): string[][] {
  const held = (ok: boolean): string => (ok ? 'ok' : 'FAILED');
  const { cache, vm } = update;
  const rows = [
    [
      'every key of the cache',
      `${number(cache.verified)} of ${number(cache.keys)} right, ${number(cache.mismatches)} mismatches`,
      held(cache.mismatches === 0 && cache.verified === cache.keys),
    ],
    [
      "the guest's ring",
      `${number(vm.ring.sequences)} sequences, ${number(vm.ring.missing)} missing, ` +
        `${number(vm.ring.outOfOrder)} out of order, ${number(vm.ring.badChecksum)} bad checksums`,
      held(vm.ring.ok),
    ],
    [
      'stamped guest memory',
      `${number(vm.guestMemory.pages)} pages, ${number(vm.guestMemory.mismatches)} changed`,
      held(vm.guestMemory.mismatches === 0),
    ],
  ];
  if (update.outcome === 'updated') {
    rows.push(
      [
        'IOMMU faults',
        `${number(update.dma.iommuFaults)} (NIC: ${number(update.dma.packetsDelivered)} delivered, ` +
          `${number(update.dma.packetsDropped)} dropped)`,
        held(update.dma.iommuFaults === 0),
      ],
      [
        'what the new kernel remembers',
        `${update.kernel.history}; ${update.kernel.failures.length} failed operations`,
        held(update.kernel.failures.length === 0),
      ],
    );
  } else {
    rows.push([
      'the NIC after the refusal',
      `${number(update.dmaAfterRefusal.packetsDelivered)} delivered, ` +
        `${number(update.dmaAfterRefusal.iommuFaults)} IOMMU faults`,
      held(update.dmaAfterRefusal.packetsDelivered > 0 && update.dmaAfterRefusal.iommuFaults === 0),
    ]);
  }
  return rows;
}

function updateSection(update: LiveUpdateReport, index: number, timelineIndex: number): string {
  const title = `${update.from} → ${update.to}`;
  const checks = `<h3>Checks</h3>${table(['check', 'found', 'held'], checkRows(update))}`;
  if (update.outcome === 'refused') {
    return (
      `<section class="update refused" id="update-${index}"><h2>${escapeHtml(title)}: refused (${escapeHtml(update.errno)})</h2>` +
      `<p>The running kernel refused the kexec before the blackout; the target cannot read:</p>` +
      list(update.reason) +
      checks +
      '</section>'
    );
  }
  const phaseRows = Object.entries(update.phases).map(([name, value]) => [name, ms(value)]);
  const vmRows = Object.entries(update.vm.phases).map(([name, value]) => [name, ms(value)]);
  const failures = update.kernel.failures.length > 0 ? list(update.kernel.failures) : '';
  return (
    `<section class="update" id="update-${index}"><h2>${escapeHtml(title)}</h2>` +
    `<p class="summary">cache blackout <b>${ms(update.blackoutMs)} ms</b>, ` +
    `VM blackout <b>${ms(update.vm.blackoutMs)} ms</b>, guest paused ${ms(update.vm.guestPausedMs)} ms; ` +
    `the NIC delivered ${number(update.dma.deliveredDuringBlackout)} packets while the guest was paused ` +
    `and dropped ${number(update.dma.packetsDropped)}; LUO ${escapeHtml(update.luo)}</p>` +
    `<div class="timeline" data-timeline="${timelineIndex}" role="img" ` +
    `aria-label="${escapeHtml(`timeline of ${title}`)}"></div>` +
    '<div class="phases">' +
    `<div><h3>Phases (ms)</h3>${table(['phase', 'ms'], phaseRows)}</div>` +
    `<div><h3>The VM's phases (ms)</h3>${table(['phase', 'ms'], vmRows)}</div>` +
    '</div>' +
    checks +
    failures +
    '</section>'
  );
}

const STYLE = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; padding: 0 16px; color: #1b1f24; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-top: 1px solid #d0d7de; padding-top: 16px; }
h3 { font-size: 15px; margin: 16px 0 4px; }
table { border-collapse: collapse; margin: 4px 0; } td, th { padding: 2px 10px; text-align: left; border-bottom: 1px solid #eaeef2; }
td:nth-child(2) { font-variant-numeric: tabular-nums; }
#verdict { font-size: 20px; font-weight: bold; padding: 8px 14px; border-radius: 6px; display: inline-block; }
#verdict.pass { background: #dafbe1; color: #116329; } #verdict.fail { background: #ffebe9; color: #a40e26; }
.facts, .phases { display: flex; gap: 40px; flex-wrap: wrap; }
.timeline { margin: 12px 0; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 14px; vertical-align: middle; }
`;

/**
 * The demo's report as one self-contained HTML page (`pnpm demo --report FILE.html`), built from
 * the JSON report and the timelines: the verdict, the settings and host, each update's timeline,
 * phases and checks. The report and the timelines are also in the page as JSON
 * (`#report-data`, `#timeline-data`), which the chart script draws from. Every string is escaped;
 * nothing is fetched: uPlot and the chart script are inlined.
 */
export function htmlReport(
  report: DemoReport,
  timelines: readonly UpdateTimeline[],
  assets: HtmlReportAssets,
): string {
  const { verdict } = report;
  let timelineIndex = 0;
  const sections = report.liveUpdates.map((update, index) =>
    updateSection(update, index, update.outcome === 'updated' ? timelineIndex++ : -1),
  );
  if (timelineIndex !== timelines.length) {
    throw new Error(
      `the report has ${timelineIndex} updates that happened but ${timelines.length} timelines`,
    );
  }
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>liveupdate demo: ${verdict.pass ? 'PASS' : 'FAIL'}</title>
${rawText('style', assets.uplotCss, "uPlot's style sheet")}
${rawText('style', STYLE, 'the style sheet')}
</head>
<body>
<h1>liveupdate demo report</h1>
<p id="verdict" class="${verdict.pass ? 'pass' : 'fail'}">${verdict.pass ? 'PASS' : 'FAIL'}</p>
${verdict.pass ? '' : list(verdict.reasons)}
${report.notes.length > 0 ? `<h3>Notes</h3>${list(report.notes)}` : ''}
<div class="facts">
<div><h3>Settings</h3>${keyValues('setting', report.settings)}</div>
<div><h3>Host</h3>${keyValues('fact', { ...report.host })}</div>
</div>
<p class="legend">Timelines: milliseconds since the old kernel's <code>reboot</code> began; each phase a bar
(<span style="background:#4c78a8"></span>kernels <span style="background:#f58518"></span>new cache
<span style="background:#54a24b"></span>new VMM), the cache's and the VM's blackouts shaded, and the
NIC's packets per millisecond as a line (right axis).</p>
${sections.join('\n')}
<script type="application/json" id="report-data">${scriptJson(report)}</script>
<script type="application/json" id="timeline-data">${scriptJson(timelines)}</script>
${rawText('script', assets.uplotJs, 'uPlot')}
${rawText('script', assets.chartJs, 'the timeline chart script')}
</body>
</html>
`;
}
