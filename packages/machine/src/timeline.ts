/** One entry of the machine's timeline, which spans every kernel that ran on it. */
export type TimelineEvent =
  | {
      readonly kind: 'log';
      /** Milliseconds since the machine was created. */
      readonly time: number;
      /** Which boot of this machine the kernel was: 0 for the cold boot, then 1, 2, … */
      readonly boot: number;
      readonly version: string;
      /** Seconds since that kernel booted. */
      readonly uptime: number;
      /** printk level: 0 (emerg) … 7 (debug). */
      readonly level: number;
      readonly text: string;
    }
  | {
      readonly kind: 'trace';
      readonly time: number;
      readonly boot: number;
      readonly version: string;
      readonly name: string;
      readonly phase: 'B' | 'E' | 'i';
      readonly args?: Readonly<Record<string, string | number | boolean>>;
    };
