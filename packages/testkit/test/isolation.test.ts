// Only preserved memory crosses a live update (DESIGN.md §2 rules 1 and 3): a handler that keeps
// its state anywhere else must fail in the next kernel, and these tests prove that it does.
import { expect, it } from 'vitest';
import { twoStage } from '@liveupdate/testkit';
import { NOTE_MODULE, TEST_RAM, noteControl, preserveNote } from './helpers.js';

it('fails a handler that keeps its state in a module variable: retrieve is ENOENT after the kexec', async () => {
  const outcome = await twoStage({
    modules: [NOTE_MODULE],
    ramBytes: TEST_RAM,
    async before(process, device) {
      await noteControl(process, { globalState: true });
      await preserveNote(await device.createSession('s'), 1, 'kept in a Map');
    },
    async after(process, device) {
      await noteControl(process, { globalState: true });
      const session = await device.retrieveSession('s');
      return session.retrieveFd(1n).catch((error: unknown) => error);
    },
  });
  expect(outcome).toMatchObject({ code: 'ENOENT' });
});

it('refuses a handler that forgot to preserve its page the read of it: the frame is free', async () => {
  const error = await twoStage({
    modules: [NOTE_MODULE],
    ramBytes: TEST_RAM,
    async before(process, device) {
      await noteControl(process, { forgetPreserve: true });
      await preserveNote(await device.createSession('s'), 1, 'never preserved');
    },
    async after(process, device) {
      await noteControl(process, { forgetPreserve: true });
      const session = await device.retrieveSession('s');
      return process.pread(await session.retrieveFd(1n), 16, 0).catch((e: unknown) => e);
    },
  });
  expect(error).toMatchObject({
    code: 'EFAULT',
    message: expect.stringMatching(
      /module note: .* which is free memory, not memory of this kernel$/,
    ),
  });
});
