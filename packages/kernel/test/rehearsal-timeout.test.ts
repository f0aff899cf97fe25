import { expect, it } from 'vitest';
import { createKernelImage } from '@liveupdate/kernel';
import { kernelOwnNote } from '../src/kernel-formats.js';
import { encodeKernelNotes } from '../src/kexec-notes.js';
import { kexecTarget } from '../src/kexec-target.js';
import { ModuleLoader } from '../src/module-loader.js';
import { rehearseLiveUpdate } from '../src/rehearsal.js';
import { PROBE } from './helpers.js';

const HANGING = new URL('./fixtures/hanging-rehearsal.js', import.meta.url).href;

it('gives up a rehearsal that does not end, and says where it was', async () => {
  const image = createKernelImage({
    version: '6.18.0',
    cmdline: 'kho=on',
    modules: [PROBE, HANGING],
    rehearse: true,
  });
  const modules = new ModuleLoader();
  await modules.load(image.modules, image.moduleBase);
  const notes = encodeKernelNotes([kernelOwnNote(), ...modules.notes()]);
  const self = kexecTarget(image.version, image.cmdline, notes);
  // The bound must outlast two private boots and a kexec on a loaded machine before the hang.
  const result = await rehearseLiveUpdate(image, modules, self, notes, { timeoutMs: 5_000 });
  expect(result.modules).toEqual(['hanging_rehearsal']);
  expect(result.error).toBe('hanging_rehearsal: after: timed out after 5000 ms');
});
