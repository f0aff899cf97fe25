// What every benchmark prints: its figures as a table beside their baselines, for people, and
// one JSON line per figure ({ name, value, unit, baseline, baselineValue }) for comparing commits.

/** A text table; `numeric(i)` right-aligns column i. */
export function textTable(header, rows, numeric = () => false) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) =>
    cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** The figures' table (value, baseline and their ratio). */
export function figureTable(figures) {
  return textTable(
    ['name', 'value', 'unit', 'baseline', 'baseline value', 'ratio'],
    figures.map((f) => [
      f.name,
      String(f.value),
      f.unit,
      f.baseline,
      String(f.baselineValue),
      `${(f.value / f.baselineValue).toFixed(2)}×`,
    ]),
    (i) => i === 1 || i === 4 || i === 5,
  );
}

/** Print one JSON line per figure. */
export function printFigureLines(figures) {
  for (const f of figures) console.log(JSON.stringify(f));
}
