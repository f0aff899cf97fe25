import { describe, expect, it } from 'vitest';
import { CommandLine } from './command-line.js';

describe('CommandLine', () => {
  it('parses key=value words separated by any whitespace and keeps the raw text', () => {
    const text = '  console=ttyS0\troot=/dev/vda   loglevel=7 ';
    const cmdline = new CommandLine(text);
    expect(cmdline.text).toBe(text);
    expect(cmdline.get('console')).toBe('ttyS0');
    expect(cmdline.get('root')).toBe('/dev/vda');
    expect(cmdline.get('loglevel')).toBe('7');
  });

  it('splits a word at its first equals sign, so a value may contain more of them', () => {
    expect(new CommandLine('dyndbg=file=a.c +p').get('dyndbg')).toBe('file=a.c');
  });

  it('gives an empty string for a bare word and undefined for an absent key', () => {
    const cmdline = new CommandLine('quiet kho=on');
    expect(cmdline.get('quiet')).toBe('');
    expect(cmdline.get('nosmp')).toBeUndefined();
    expect(new CommandLine('').get('quiet')).toBeUndefined();
  });

  it('lets the last occurrence of a key win', () => {
    const cmdline = new CommandLine('kho=on page_poison=1 kho=off quiet quiet=0');
    expect(cmdline.get('kho')).toBe('off');
    expect(cmdline.bool('kho', true)).toBe(false);
    expect(cmdline.bool('quiet', true)).toBe(false);
    expect(cmdline.bool('page_poison', false)).toBe(true);
    expect(new CommandLine('x=1 x').bool('x', false)).toBe(true);
    expect(new CommandLine('kho_scratch=4M kho_scratch=8M').size('kho_scratch')).toBe(
      8 * 1024 * 1024,
    );
  });

  describe('bool (kstrtobool)', () => {
    it.each([
      ['on', true],
      ['ON', true],
      ['On', true],
      ['y', true],
      ['Y', true],
      ['yes', true],
      ['1', true],
      ['true', true],
      ['off', false],
      ['OFF', false],
      ['n', false],
      ['N', false],
      ['no', false],
      ['0', false],
      ['false', false],
    ])('reads %s as %s whatever the fallback', (value, expected) => {
      const cmdline = new CommandLine(`flag=${value}`);
      expect(cmdline.bool('flag', true)).toBe(expected);
      expect(cmdline.bool('flag', false)).toBe(expected);
    });

    it('treats a bare word as true', () => {
      expect(new CommandLine('kho').bool('kho', false)).toBe(true);
    });

    it('returns the fallback when the key is absent', () => {
      const cmdline = new CommandLine('other=1');
      expect(cmdline.bool('kho', false)).toBe(false);
      expect(cmdline.bool('kho', true)).toBe(true);
    });

    it.each(['maybe', '2', 'o', 'enable', '-1', 'x1'])(
      'keeps the fallback for %s and reports a malformed option',
      (value) => {
        const reports: string[] = [];
        const cmdline = new CommandLine(`kho=${value}`, (message) => reports.push(message));
        expect(cmdline.bool('kho', false)).toBe(false);
        expect(cmdline.bool('kho', true)).toBe(true);
        expect(reports).toEqual([
          `Malformed early option 'kho=${value}': expected on/off, y/n or 1/0`,
        ]);
      },
    );
  });

  describe('size (memparse)', () => {
    it.each([
      ['0', 0],
      ['123', 123],
      ['4K', 4 * 1024],
      ['4k', 4 * 1024],
      ['16M', 16 * 1024 * 1024],
      ['16m', 16 * 1024 * 1024],
      ['1G', 1024 * 1024 * 1024],
      ['3g', 3 * 1024 * 1024 * 1024],
    ])('reads %s as %d bytes', (value, bytes) => {
      expect(new CommandLine(`kho_scratch=${value}`).size('kho_scratch')).toBe(bytes);
    });

    it('returns undefined when the key is absent', () => {
      expect(new CommandLine('kho=on').size('kho_scratch')).toBeUndefined();
    });

    it.each(['lots', '-4K', '1.5M', 'M', '4X', ''])(
      'gives undefined for %j, so the default applies, and reports it once',
      (value) => {
        const reports: string[] = [];
        const text = value === '' ? 'kho_scratch' : `kho_scratch=${value}`;
        const cmdline = new CommandLine(text, (message) => reports.push(message));
        expect(cmdline.size('kho_scratch')).toBeUndefined();
        expect(cmdline.size('kho_scratch')).toBeUndefined();
        expect(reports).toHaveLength(1);
        expect(reports[0]).toContain('kho_scratch');
      },
    );
  });
});
