/**
 * Format rows as a plain-text table: the first column left-aligned, the others right-aligned
 * (they hold figures), with a rule under the header.
 */
export function textTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)),
  );
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
      .join('   ')
      .trimEnd();
  return [line(header), widths.map((w) => '─'.repeat(w)).join('   '), ...rows.map(line)].join('\n');
}
