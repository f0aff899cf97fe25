// What the kernel worker's entry point (worker.ts) imports once V8 compiles eagerly: one per boot.
// Everything below is imported afresh in each worker, so no JS state of a previous kernel can
// exist here; the channels a module could use to reach another kernel's worker are closed before
// any module is imported.
import 'reflect-metadata';
import { isolateKernelWorker } from './isolate-kernel-worker.js';
import { runKernelWorker } from './kernel-worker.js';

const { port, data } = isolateKernelWorker();
void runKernelWorker(port, data);
