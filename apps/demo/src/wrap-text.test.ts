import { describe, expect, it } from 'vitest';
import { DEFAULT_COLUMNS, terminalColumns, wrapText } from './wrap-text.js';

describe('wrapText', () => {
  it('leaves a line that fits as it is', () => {
    expect(wrapText('cache pid 3: 1.25 ms', 20)).toBe('cache pid 3: 1.25 ms');
  });

  it('breaks at spaces only, indenting continuations by two', () => {
    expect(wrapText('verified every key: 1,000,000 of 1,000,000 right', 24)).toBe(
      ['verified every key:', '  1,000,000 of 1,000,000', '  right'].join('\n'),
    );
  });

  it('never cuts a number longer than the width: it keeps a line of its own', () => {
    expect(wrapText('blackout 123456789.123 ms', 8)).toBe(
      ['blackout', '  123456789.123', '  ms'].join('\n'),
    );
  });

  it("keeps an indented line's indentation and wraps each line of the text on its own", () => {
    const wrapped = wrapText('first line\n  the NIC sent 10,000 packets and dropped 0', 22);
    expect(wrapped).toBe(
      ['first line', '  the NIC sent 10,000', '    packets and', '    dropped 0'].join('\n'),
    );
    for (const line of wrapped.split('\n')) expect(line.length).toBeLessThanOrEqual(22);
  });
});

describe('terminalColumns', () => {
  it("is the terminal's width, or 100 when stdout is not a terminal", () => {
    expect(terminalColumns({ columns: 132 })).toBe(132);
    expect(terminalColumns({})).toBe(DEFAULT_COLUMNS);
    expect(DEFAULT_COLUMNS).toBe(100);
  });
});
