import { describe, expect, it } from 'vitest';
import { KernelError } from '@liveupdate/machine';
import { WaitQueue } from './wait-queue.js';

describe('WaitQueue', () => {
  it('wakes every waiter once; a wait after the wake waits for the next one', async () => {
    const queue = new WaitQueue();
    const woken: string[] = [];
    const a = queue.wait(undefined, 'a').then(() => woken.push('a'));
    const b = queue.wait(undefined, 'b').then(() => woken.push('b'));
    queue.wake();
    await Promise.all([a, b]);
    expect(woken.sort()).toEqual(['a', 'b']);
    let late = false;
    const c = queue.wait(undefined, 'c').then(() => (late = true));
    await Promise.resolve();
    expect(late).toBe(false);
    queue.wake();
    await c;
    expect(late).toBe(true);
  });

  it('rejects with EINTR naming the wait when the abort signal fires, before or during it', async () => {
    const queue = new WaitQueue();
    const exit = new AbortController();
    const waiting = queue.wait(exit.signal, 'data');
    exit.abort();
    const error = await waiting.catch((e: unknown) => e);
    expect(KernelError.isInstance(error) && error.code).toBe('EINTR');
    expect((error as Error).message).toContain('data');
    await expect(queue.wait(exit.signal, 'more')).rejects.toMatchObject({ code: 'EINTR' });
    // The aborted waiter is gone: a wake has nobody left to resolve, and nothing throws.
    queue.wake();
  });
});
