/** The width prose is wrapped to when stdout is not a terminal (a pipe, a file, CI). */
export const DEFAULT_COLUMNS = 100;

/** The width of the terminal `stream` writes to, or {@link DEFAULT_COLUMNS} when it is none. */
export function terminalColumns(stream: { readonly columns?: number | undefined }): number {
  return stream.columns && stream.columns > 0 ? stream.columns : DEFAULT_COLUMNS;
}

/**
 * Wrap each line of `text` to at most `width` characters, breaking only at spaces: a word (a
 * number, a path, `6.18.0 → 6.18.1` is three) is never cut, so one longer than `width` keeps a
 * line of its own. A wrapped line's continuations are indented two spaces more than its own
 * indentation, so they read as one line. Tables are not passed here: their rows must stay rows.
 */
export function wrapText(text: string, width: number): string {
  return text
    .split('\n')
    .map((line) => wrapLine(line, width))
    .join('\n');
}

function wrapLine(line: string, width: number): string {
  if (line.length <= width) return line;
  const indent = /^ */.exec(line)![0];
  const words = line.slice(indent.length).split(' ');
  const lines: string[] = [];
  let current = indent + words[0]!;
  for (const word of words.slice(1)) {
    if (current.length + 1 + word.length <= width) {
      current += ` ${word}`;
    } else {
      lines.push(current);
      current = `${indent}  ${word}`;
    }
  }
  lines.push(current);
  return lines.join('\n');
}
