import { describe, expect, it } from 'vitest';
import { parseDemoOptions } from './demo-options.js';

describe('parseDemoOptions', () => {
  it('runs the same-kernel scenario with one update by default', () => {
    const options = parseDemoOptions([]);
    expect(options.scenario).toBe('same');
    expect(options.updates).toBe(1);
  });

  it('takes --scenario skew', () => {
    expect(parseDemoOptions(['--scenario', 'skew', '--json']).scenario).toBe('skew');
  });

  it('refuses an unknown scenario, naming the ones there are', () => {
    expect(() => parseDemoOptions(['--scenario', 'rollback'])).toThrow(
      '--scenario takes same or skew, not "rollback"',
    );
  });

  it('refuses --updates with the skew scenario, whose chain is fixed', () => {
    expect(() => parseDemoOptions(['--scenario', 'skew', '--updates', '3'])).toThrow(
      '--updates goes with --scenario same',
    );
    expect(parseDemoOptions(['--scenario', 'same', '--updates', '3']).updates).toBe(3);
  });
});
