import type { UserConfig } from 'vitest/config';

/** The shared vitest preset (see preset.js). */
export declare const preset: UserConfig;
