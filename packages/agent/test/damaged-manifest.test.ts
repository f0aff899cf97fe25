// The manifest is untrusted input: the next agent refuses a damaged one before it retrieves any
// service's session, so nothing is handed out and LUO still holds every file.
import { describe, expect, it } from 'vitest';
import { LiveUpdateDevice } from '@liveupdate/core';
import {
  AF_UNIX,
  F_ADD_SEALS,
  KernelError,
  MFD_ALLOW_SEALING,
  SOCK_STREAM,
  type Process,
} from '@liveupdate/machine';
import {
  AGENT_SESSION,
  AgentClient,
  LuoAgent,
  MANIFEST_MAX_BYTES,
  MANIFEST_SEALS,
  MANIFEST_TOKEN,
} from '@liveupdate/agent';
import type { LiveUpdateHarness } from '@liveupdate/testkit';
import { boot, errnoOf, memfdWith, textOf } from './helpers.js';

/**
 * Preserve, as a rogue agent would, a session `luod` whose manifest memfd holds `manifest` (with
 * `seals`), and a session `cache` with a memfd; then live-update. Resolves with the new process and the harness.
 */
async function updateWithManifest(
  manifest: string,
  seals: number,
): Promise<{ next: Process; harness: LiveUpdateHarness }> {
  const harness = await boot();
  const process = harness.process;
  const device = await LiveUpdateDevice.open(process);
  const cache = await device.createSession('cache');
  await cache.preserveFd(await memfdWith(process, 'cache data'), 1n);
  const fd = await process.memfdCreate('luod-manifest', MFD_ALLOW_SEALING);
  await process.pwrite(fd, new TextEncoder().encode(manifest), 0);
  if (seals) await process.fcntl(fd, F_ADD_SEALS, seals);
  await (await device.createSession(AGENT_SESSION)).preserveFd(fd, MANIFEST_TOKEN);
  return { next: await harness.liveUpdate(), harness };
}

/** The error `LuoAgent.restore` rejects with. */
async function restoreError(process: Process): Promise<KernelError> {
  try {
    await LuoAgent.restore(process);
  } catch (error) {
    if (KernelError.isInstance(error)) return error;
    throw error;
  }
  throw new Error('LuoAgent.restore accepted a damaged manifest');
}

/** LUO still has the cache's session and file, untouched: nothing was retrieved or finished. */
async function expectCacheUntouched(process: Process): Promise<void> {
  const device = await LiveUpdateDevice.open(process);
  const session = await device.retrieveSession('cache');
  expect(await textOf(process, await session.retrieveFd(1n), 10)).toBe('cache data');
  await device.close();
}

describe('a damaged manifest', () => {
  it('is refused with EIO naming the field and its value, and nothing is handed out', async () => {
    // A token the agent never writes (0), in an otherwise good manifest.
    const { next } = await updateWithManifest(
      JSON.stringify({ version: 1, services: { cache: { table: { order: 0, tokens: [0] } } } }),
      MANIFEST_SEALS,
    );
    const error = await restoreError(next);
    expect(error.code).toBe('EIO');
    expect(error.message).toContain('services["cache"]["table"].tokens[0] is 0');
    // The agent did not listen: no service could reach it.
    expect(
      await errnoOf(next.connect(await next.socket(AF_UNIX, SOCK_STREAM), '/run/luod.sock')),
    ).toBe('ENOENT');
    await expectCacheUntouched(next);
  });

  it('is refused when the manifest memfd is not sealed against writes', async () => {
    const good = JSON.stringify({
      version: 1,
      services: { cache: { table: { order: 0, tokens: [1] } } },
    });
    const { next } = await updateWithManifest(good, 0);
    const error = await restoreError(next);
    expect(error.code).toBe('EIO');
    expect(error.message).toContain('seals are 0x0');
    await expectCacheUntouched(next);
  });
});

describe('a manifest that names what LUO does not have', () => {
  it("fails only that service or entry, with LUO's errno, and serves the rest", async () => {
    // "ghost" has no session; the cache's "gone" names a token its session lacks.
    const { next, harness } = await updateWithManifest(
      JSON.stringify({
        version: 1,
        services: {
          cache: { table: { order: 0, tokens: [1] }, gone: { order: 1, tokens: [7] } },
          ghost: { data: { order: 0, tokens: [1] } },
        },
      }),
      MANIFEST_SEALS,
    );
    await LuoAgent.restore(next);
    const service = harness.machine.spawn();
    const ghost = await AgentClient.connect(service);
    expect(await errnoOf(ghost.hello('ghost'))).toBe('ENOENT');
    // Told once: the name starts afresh.
    expect(await ghost.hello('ghost')).toEqual({ restored: false });
    const cache = await AgentClient.connect(service);
    expect(await cache.hello('cache')).toEqual({ restored: true });
    expect(await cache.list()).toEqual([
      { name: 'table', order: 0, fds: 1 },
      { name: 'gone', order: 1, fds: 1, error: 'ENOENT' },
    ]);
    expect(await errnoOf(cache.fetch('gone'))).toBe('ENOENT');
    const [fd] = await cache.fetch('table');
    expect(await textOf(service, fd!, 10)).toBe('cache data');
  });
});

describe('no agent session', () => {
  it('is ENOENT, not a damaged manifest', async () => {
    const harness = await boot();
    const next = await harness.liveUpdate();
    const error = await restoreError(next);
    expect(error.code).toBe('ENOENT');
    expect(error.message).toContain('no session "luod"');
    // The socket it brought up beside the manifest's reading is gone, path and all.
    const fresh = await LuoAgent.start(next);
    await fresh.close();
  });
});

describe('a large manifest', () => {
  const good = JSON.stringify({
    version: 1,
    services: { cache: { table: { order: 0, tokens: [1] } } },
  });

  it('is read whole past one read of 64 KiB, and at exactly 64 KiB', async () => {
    // Leading blanks: a reader that stopped after its first read would see no JSON at all.
    for (const bytes of [200_000, 64 * 1024]) {
      const { next, harness } = await updateWithManifest(
        ' '.repeat(bytes - good.length) + good,
        MANIFEST_SEALS,
      );
      const restored = await LuoAgent.restore(next);
      expect(restored.services).toEqual(new Map([['cache', ['table']]]));
      const service = harness.machine.spawn();
      const client = await AgentClient.connect(service);
      await client.hello('cache');
      const [fd] = await client.fetch('table');
      expect(await textOf(service, fd!, 10)).toBe('cache data');
      await restored.close();
    }
  });

  it('is refused with EIO over its limit, and nothing is handed out', async () => {
    const { next } = await updateWithManifest(
      ' '.repeat(MANIFEST_MAX_BYTES + 1 - good.length) + good,
      MANIFEST_SEALS,
    );
    const error = await restoreError(next);
    expect(error.code).toBe('EIO');
    expect(error.message).toContain(`over ${MANIFEST_MAX_BYTES} bytes`);
    await expectCacheUntouched(next);
  });
});
