import { KernelError } from '@liveupdate/machine';

/**
 * The parsed kernel command line: `key=value` and bare `key` words separated by spaces, the last
 * occurrence of a key winning, as the kernel's `early_param` handlers see it.
 */
export class CommandLine {
  readonly text: string;
  readonly #params = new Map<string, string>();

  constructor(text: string) {
    this.text = text;
    for (const word of text.split(/\s+/)) {
      if (!word) continue;
      const eq = word.indexOf('=');
      if (eq < 0) this.#params.set(word, '');
      else this.#params.set(word.slice(0, eq), word.slice(eq + 1));
    }
  }

  /** The value of `key`, `''` for a bare word, or `undefined` when absent. */
  get(key: string): string | undefined {
    return this.#params.get(key);
  }

  /**
   * A boolean parameter parsed like the kernel's `kstrtobool` (`on`/`off`, `y`/`n`, `1`/`0`); a
   * bare word means true. Throws `EINVAL` for anything else.
   */
  bool(key: string, fallback: boolean): boolean {
    const value = this.#params.get(key);
    if (value === undefined) return fallback;
    if (value === '') return true;
    const v = value.toLowerCase();
    if (v === 'on' || v.startsWith('y') || v.startsWith('t') || v === '1') return true;
    if (v === 'off' || v.startsWith('n') || v.startsWith('f') || v === '0') return false;
    throw new KernelError('EINVAL', `${key}=${value}: expected on/off, y/n or 1/0`);
  }

  /**
   * A size like the kernel's `memparse`: a number with an optional `K`, `M` or `G` suffix. Throws
   * `EINVAL` when malformed.
   */
  size(key: string): number | undefined {
    const value = this.#params.get(key);
    if (value === undefined) return undefined;
    const match = /^(\d+)([KMG]?)$/i.exec(value);
    if (!match) throw new KernelError('EINVAL', `${key}=${value}: expected a size such as 16M`);
    const shift = { '': 0, K: 10, M: 20, G: 30 }[match[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
    return Number(match[1]) * 2 ** shift;
  }
}
