// The kernel worker's entry point: one per boot. Everything below is imported afresh in each
// worker, so no JS state of a previous kernel can exist here.
import 'reflect-metadata';
import { parentPort, workerData } from 'node:worker_threads';
import { runKernelWorker } from './kernel-worker.js';
import type { KernelWorkerData } from '@liveupdate/machine';

if (!parentPort) throw new Error('the kernel must run in a worker thread');
void runKernelWorker(parentPort, workerData as KernelWorkerData);
