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

it('shows poison, not the text, to a handler that forgot to preserve its page', async () => {
  const bytes = await twoStage({
    modules: [NOTE_MODULE],
    ramBytes: TEST_RAM,
    async before(process, device) {
      await noteControl(process, { forgetPreserve: true });
      await preserveNote(await device.createSession('s'), 1, 'never preserved');
    },
    async after(process, device) {
      await noteControl(process, { forgetPreserve: true });
      const session = await device.retrieveSession('s');
      return process.pread(await session.retrieveFd(1n), 16, 0);
    },
  });
  expect([...bytes]).toEqual(new Array(16).fill(0xaa));
});
