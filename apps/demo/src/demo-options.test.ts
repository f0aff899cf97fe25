import { describe, expect, it } from 'vitest';
import { DemoOptionError, parseDemoOptions } from './demo-options.js';

describe('parseDemoOptions', () => {
  it('runs the same-kernel scenario with one update, no JSON, no trace, no report and no memcached by default', () => {
    expect(parseDemoOptions([])).toEqual({
      scenario: 'same',
      mib: 256,
      keys: 1_000_000,
      guestMib: 256,
      updates: 1,
      json: false,
      quiet: false,
      explain: false,
      trace: null,
      report: null,
      memcached: false,
      help: false,
    });
  });

  it('takes --memcached, a flag, with any scenario and output', () => {
    expect(parseDemoOptions(['--memcached'])).toMatchObject({ memcached: true, json: false });
    expect(
      parseDemoOptions(['--memcached', '--scenario', 'skew', '--json', '--mib', '16']),
    ).toMatchObject({ memcached: true, scenario: 'skew', json: true, mib: 16 });
    expect(parseDemoOptions(['--memcached', '--quiet'])).toMatchObject({
      memcached: true,
      quiet: true,
    });
  });

  it('refuses a value for --memcached', () => {
    expect(() => parseDemoOptions(['--memcached=11211'])).toThrow(
      new DemoOptionError('--memcached takes no value, not "11211"'),
    );
  });

  it('takes every option, in either --name value or --name=value form, after a --', () => {
    expect(
      parseDemoOptions([
        '--',
        '--mib=16',
        '--keys',
        '20_000',
        '--guest-mib',
        '64',
        '--updates=3',
        '--json',
        '--trace',
        '/tmp/t.json',
        '--report=/tmp/r.html',
      ]),
    ).toMatchObject({
      mib: 16,
      keys: 20_000,
      guestMib: 64,
      updates: 3,
      json: true,
      trace: '/tmp/t.json',
      report: '/tmp/r.html',
    });
  });

  it('takes --quiet and --explain, with any scenario', () => {
    expect(parseDemoOptions(['--quiet', '--updates', '3'])).toMatchObject({
      quiet: true,
      explain: false,
      updates: 3,
    });
    expect(parseDemoOptions(['--scenario', 'skew', '--quiet', '--explain'])).toMatchObject({
      scenario: 'skew',
      quiet: true,
      explain: true,
    });
  });

  it('refuses --quiet with --json, which are two outputs', () => {
    const parse = () => parseDemoOptions(['--json', '--quiet']);
    expect(parse).toThrow(DemoOptionError);
    expect(parse).toThrow('--quiet and --json are two outputs, a table or a report: choose one');
  });

  it('takes --scenario skew', () => {
    expect(parseDemoOptions(['--scenario', 'skew', '--json']).scenario).toBe('skew');
  });

  it('refuses an unknown scenario, naming the ones there are', () => {
    expect(() => parseDemoOptions(['--scenario', 'rollback'])).toThrow(
      '--scenario must be same or skew, not "rollback"',
    );
  });

  it('refuses --updates with the skew scenario, whose chain is fixed', () => {
    expect(() => parseDemoOptions(['--scenario', 'skew', '--updates', '3'])).toThrow(
      '--updates goes with --scenario same',
    );
  });

  it.each([
    ['--updates', '-1', '--updates must be a whole number from 1 to 100, not "-1"'],
    ['--updates', '0', '--updates must be a whole number from 1 to 100, not "0"'],
    ['--updates', '101', '--updates must be a whole number from 1 to 100, not "101"'],
    ['--updates', 'three', '--updates must be a whole number from 1 to 100, not "three"'],
    ['--updates', '1.5', '--updates must be a whole number from 1 to 100, not "1.5"'],
    ['--updates', '1e2', '--updates must be a whole number from 1 to 100, not "1e2"'],
    ['--mib', '-16', '--mib must be a whole number from 1 to 2,048, not "-16"'],
    ['--mib', '4096', '--mib must be a whole number from 1 to 2,048, not "4096"'],
    ['--guest-mib', 'lots', '--guest-mib must be a whole number from 1 to 2,048, not "lots"'],
    ['--keys', '0x10', '--keys must be a whole number from 1 to 100,000,000, not "0x10"'],
    ['--keys', '200000000', '--keys must be a whole number from 1 to 100,000,000, not "200000000"'],
  ])('refuses %s %s in its own words', (option, value, message) => {
    const parse = () => parseDemoOptions([option, value]);
    expect(parse).toThrow(DemoOptionError);
    expect(parse).toThrow(message);
  });

  it('refuses a cache and guest RAM that together outgrow the machine', () => {
    expect(() => parseDemoOptions(['--mib', '2048', '--guest-mib', '1025'])).toThrow(
      '--mib and --guest-mib must together be at most 3072, not 2048 + 1025',
    );
    expect(parseDemoOptions(['--mib', '2048', '--guest-mib', '1024']).guestMib).toBe(1024);
  });

  it.each([
    [['--updates'], '--updates needs a value'],
    [['--trace='], '--trace needs a value'],
    [['--report'], '--report needs a value'],
    [['--json=yes'], '--json takes no value, not "yes"'],
    [['--verbose'], 'unknown option --verbose'],
    [['3'], 'unexpected argument "3": every option starts with --'],
  ])('refuses %j in its own words', (argv, message) => {
    expect(() => parseDemoOptions(argv)).toThrow(message);
  });
});
