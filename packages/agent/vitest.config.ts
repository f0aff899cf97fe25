import { defineConfig } from 'vitest/config';
import { preset } from '@liveupdate/vitest-config';

export default defineConfig(preset);
