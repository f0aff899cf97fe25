// The handler contract's laws, the same for every handler: preserve/unpreserve leaves nothing
// behind, a file is preserved once, retrieve gives back equal content, three updates in a row,
// no state outside preserved memory, and more (see @liveupdate/testkit's README).
import { describeConformance } from '@liveupdate/testkit';
import { VALUE_LUO_COMPATIBLE } from '../src/index.js';
import { MODULE, appendValue, openValue, readValueContent } from './helpers.js';

let serial = 0;

describeConformance({
  name: '__NAME__-v1 conformance',
  handlerCompatible: VALUE_LUO_COMPATIBLE,
  modules: [MODULE],
  moduleBase: import.meta.url,
  createFile: (process) => openValue(process, `value ${++serial}`),
  readContent: readValueContent,
  // What a workload does while its file is preserved. The suite calls it again after each of
  // several live updates and through a second fd, so each call must work on what the last left.
  mutate: (process, fd) => appendValue(process, fd, `; change ${++serial}`),
});
