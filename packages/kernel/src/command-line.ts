/**
 * The parsed kernel command line: `key=value` and bare `key` words separated by spaces, the last
 * occurrence of a key winning, as the kernel's `early_param` handlers see it. A malformed value
 * does not stop the boot: as in Linux ("Malformed early option"), it is reported once through
 * `onMalformed` and the parameter keeps its default.
 */
export class CommandLine {
  readonly text: string;
  readonly #params = new Map<string, string>();
  readonly #onMalformed: (message: string) => void;
  readonly #reported = new Set<string>();

  constructor(text: string, onMalformed: (message: string) => void = () => undefined) {
    this.text = text;
    this.#onMalformed = onMalformed;
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
   * bare word means true. Anything else is malformed: `fallback`.
   */
  bool(key: string, fallback: boolean): boolean {
    const value = this.#params.get(key);
    if (value === undefined) return fallback;
    if (value === '') return true;
    const v = value.toLowerCase();
    if (v === 'on' || v.startsWith('y') || v.startsWith('t') || v === '1') return true;
    if (v === 'off' || v.startsWith('n') || v.startsWith('f') || v === '0') return false;
    return this.#malformed(key, value, 'on/off, y/n or 1/0', fallback);
  }

  /**
   * A size like the kernel's `memparse`: a number with an optional `K`, `M` or `G` suffix.
   * Absent or malformed: `undefined`, so the caller's default applies.
   */
  size(key: string): number | undefined {
    const value = this.#params.get(key);
    if (value === undefined) return undefined;
    const match = /^(\d+)([KMG]?)$/i.exec(value);
    if (!match) return this.#malformed(key, value, 'a size such as 16M', undefined);
    const shift = { '': 0, K: 10, M: 20, G: 30 }[match[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
    return Number(match[1]) * 2 ** shift;
  }

  #malformed<T>(key: string, value: string, expected: string, fallback: T): T {
    if (!this.#reported.has(key)) {
      this.#reported.add(key);
      this.#onMalformed(`Malformed early option '${key}=${value}': expected ${expected}`);
    }
    return fallback;
  }
}
