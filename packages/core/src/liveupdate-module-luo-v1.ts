/**
 * The `liveupdate` kernel module as built before `luo-v2`: it reads and writes only `luo-v1` (no
 * checksums). List `@liveupdate/core/module-luo-v1` instead of `@liveupdate/core/module` to build
 * a kernel that stands for an older release, for updates and rollbacks across LUO ABI versions.
 *
 * @module @liveupdate/core/module-luo-v1
 */
import { createLiveUpdateModule } from './create-liveupdate-module.js';

export default createLiveUpdateModule({ abi: [1] });
