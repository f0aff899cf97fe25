/**
 * `/dev/__NAME__`, a char device whose open files each hold a small value in a kernel page, and
 * its Live Update Orchestrator file handler `"__NAME__-v1"`, which carries the value across a
 * kernel live update. The default export is the kernel module.
 *
 * @packageDocumentation
 */
export { valueModule as default } from './value-module.js';
export { VALUE_DEVICE_PATH, createValueFileOperations } from './value-file-operations.js';
export { VALUE_LUO_COMPATIBLE, valueLuoSer } from './value-luo-abi.js';
export { createValueLuoHandler } from './value-luo-handler.js';
export { VALUE_MAX, ValuePage } from './value-page.js';
export { VALUE_REHEARSAL_SESSION, valueRehearsal } from './value-rehearsal.js';
