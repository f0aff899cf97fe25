// The kernel worker's entry point: one per boot. The kernel is compiled as it is loaded
// (eager-compile.ts), then everything else is imported: see kernel-worker-entry.ts.
import { compileEagerly } from './eager-compile.js';

compileEagerly();
await import('./kernel-worker-entry.js');
