import { setFlagsFromString } from 'node:v8';

/**
 * V8 compiles JavaScript lazily: a function is compiled the first time it runs. Every kernel
 * boots in a fresh worker, so without this every kexec paid, inside the blackout, for compiling
 * the code it runs there for the first time — the old kernel's reboot path, the new kernel's
 * boot, LUO's deserialization and retrieval (measured here: half the cache's blackout). A real
 * kernel image arrives compiled; ours is compiled when it is loaded: from the start of its worker
 * until its modules are imported (`kexec_load`, before the blackout), every function is compiled
 * as its module is ({@link compileLazilyAgain} ends that), and bytecode is never flushed, so code
 * the kernel has not run yet — its reboot path — is still compiled when it runs.
 *
 * V8 flags are the process's, not the worker's (a worker cannot be given V8 options): while a
 * kernel loads, what any other thread compiles is compiled eagerly too, which costs time, never
 * correctness.
 */
export function compileEagerly(): void {
  setFlagsFromString('--no-lazy');
  setFlagsFromString('--no-flush-bytecode');
}

/**
 * Back to lazy compilation once the kernel's modules are imported: V8's default, unless the
 * process was started with `--no-lazy`.
 */
export function compileLazilyAgain(): void {
  if (!process.execArgv.includes('--no-lazy')) setFlagsFromString('--lazy');
}
