/**
 * The `liveupdate` kernel module: list `@liveupdate/core/module` in a kernel image, before the
 * modules whose file handlers it serves.
 *
 * @module @liveupdate/core/module
 */
import { createLiveUpdateModule } from './create-liveupdate-module.js';

export default createLiveUpdateModule();
