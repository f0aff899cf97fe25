// liveupdate_register_file_handler() and its unregister (spec/luo-upstream.md §5), probed from
// inside the kernel by fixtures/registration-probe-module.js.
import { describe, expect, it } from 'vitest';
import type { Process } from '@liveupdate/machine';
import { NOTE_MODULE, REGISTRATION_PROBE_MODULE, boot, openDevice } from './helpers.js';

const MODULES = [NOTE_MODULE, REGISTRATION_PROBE_MODULE];

function probe(process: Process, op: string, args: object = {}): Promise<unknown> {
  return process.syscall('registration_probe', op, args);
}

describe('registering a file handler', () => {
  it('is EOPNOTSUPP when LUO is disabled, and /dev/liveupdate does not exist', async () => {
    const harness = await boot({ modules: MODULES, cmdline: 'liveupdate=off' });
    await expect(openDevice(harness.process)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await probe(harness.process, 'init')).toBe('EOPNOTSUPP');
    expect(harness.machine.dmesg()).toMatch(
      /registration_probe: registering probe-v1 at init: EOPNOTSUPP/,
    );
  });

  it('succeeds at module init when LUO is on', async () => {
    const harness = await boot({ modules: MODULES });
    expect(await probe(harness.process, 'init')).toBe('ok');
  });

  it.each(['canPreserve', 'preserve', 'unpreserve', 'retrieve', 'finish'])(
    'is EINVAL for a handler without the required op %s',
    async (op) => {
      const { process } = await boot({ modules: MODULES });
      expect(await probe(process, 'register', { compatible: 'partial-v1', without: op })).toBe(
        'EINVAL',
      );
      // Nothing was registered under that compatible.
      expect(await probe(process, 'register', { compatible: 'partial-v1' })).toBe('ok');
    },
  );

  it.each([
    ['empty', ''],
    ['48 bytes long, no room for the NUL', 'c'.repeat(48)],
    ['47 bytes of text that is 48 bytes of UTF-8', `${'c'.repeat(46)}é`],
    ['holding a NUL', 'bad\0-v1'],
  ])('is EINVAL for a compatible %s', async (_what, compatible) => {
    const { process } = await boot({ modules: MODULES });
    expect(await probe(process, 'register', { compatible })).toBe('EINVAL');
  });

  it('accepts a 47-byte compatible', async () => {
    const { process } = await boot({ modules: MODULES });
    expect(await probe(process, 'register', { compatible: 'c'.repeat(47) })).toBe('ok');
  });

  it('is EEXIST for a compatible another handler registered', async () => {
    const { process } = await boot({ modules: MODULES });
    expect(await probe(process, 'register', { compatible: 'note-v1' })).toBe('EEXIST');
    expect(await probe(process, 'register', { compatible: 'probe-v1' })).toBe('EEXIST');
  });
});

describe('unregistering a file handler', () => {
  it('is EBUSY while a session exists, and succeeds once none does', async () => {
    const { process } = await boot({ modules: MODULES });
    const session = await (await openDevice(process)).createSession('s');
    expect(await probe(process, 'unregister', { compatible: 'probe-v1' })).toBe('EBUSY');
    await session.close();
    expect(await probe(process, 'unregister', { compatible: 'probe-v1' })).toBe('ok');
    // Its compatible is free again.
    expect(await probe(process, 'register', { compatible: 'probe-v1' })).toBe('ok');
  });

  it('is EBUSY while an incoming session is not finished', async () => {
    const harness = await boot({ modules: MODULES });
    await (await openDevice(harness.process)).createSession('s');
    const next = await harness.liveUpdate();
    const device = await openDevice(next);
    expect(await probe(next, 'unregister', { compatible: 'probe-v1' })).toBe('EBUSY');
    await (await device.retrieveSession('s')).close();
    expect(await probe(next, 'unregister', { compatible: 'probe-v1' })).toBe('ok');
  });
});
