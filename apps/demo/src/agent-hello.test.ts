import { describe, expect, it } from 'vitest';
import type { AgentClient } from '@liveupdate/agent';
import { helloRestored } from './agent-hello.js';

/** A client whose hello answers `answer` once `release` is called; it records the order of calls. */
function client(answer: () => Promise<{ restored: boolean }>) {
  const calls: string[] = [];
  let release = (): void => undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const fake = {
    hello: async () => {
      calls.push('hello');
      await gate;
      return answer();
    },
  } as unknown as AgentClient;
  return { fake, calls, release };
}

describe('helloRestored', () => {
  it('sends the fetches before the hello is answered and hands them out once it is', async () => {
    const { fake, calls, release } = client(async () => ({ restored: true }));
    const hello = helloRestored(fake, 'cache', async () => {
      calls.push('fetch');
      return 7;
    });
    await Promise.resolve();
    expect(calls).toEqual(['hello', 'fetch']);
    release();
    const { fetched } = await hello;
    expect(await fetched).toBe(7);
  });

  it('rejects when the agent restored nothing, once the fetches are answered', async () => {
    const { fake, release } = client(async () => ({ restored: false }));
    let fetchSettled = false;
    const hello = helloRestored(fake, 'vm0', async () => {
      await new Promise((resolve) => setTimeout(resolve, 5));
      fetchSettled = true;
      throw new Error('ENOENT');
    });
    release();
    await expect(hello).rejects.toThrow('the agent restored nothing for "vm0"');
    expect(fetchSettled).toBe(true);
  });

  it("rejects with the hello's own error, the fetch's refusal handled", async () => {
    const { fake, release } = client(async () => {
      throw new Error('EEXIST: connected already');
    });
    const hello = helloRestored(fake, 'cache', async () => {
      throw new Error('EACCES');
    });
    release();
    await expect(hello).rejects.toThrow('EEXIST: connected already');
  });
});
