/**
 * The eventfd Live Update Orchestrator file handler, `"eventfd-v1"`: an eventfd's counter and
 * its semaphore and non-blocking modes cross a kernel live update.
 *
 * @packageDocumentation
 */
export { eventfdLuoModule as default } from './eventfd-luo-module.js';
export { createEventfdLuoHandler } from './eventfd-luo-handler.js';
export { EVENTFD_LUO_FH_COMPATIBLE, EVENTFD_LUO_FLAGS, eventfdLuoSer } from './eventfd-luo-abi.js';
