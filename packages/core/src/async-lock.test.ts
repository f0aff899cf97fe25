import { describe, expect, it } from 'vitest';
import { Mutex, RwLock } from './async-lock.js';

const tick = () => new Promise((resolve) => setTimeout(resolve, 1));

describe('Mutex', () => {
  it('runs critical sections one at a time, in arrival order, across awaits', async () => {
    const mutex = new Mutex();
    const trace: string[] = [];
    const section = (name: string) =>
      mutex.run(async () => {
        trace.push(`${name}+`);
        await tick();
        trace.push(`${name}-`);
      });
    await Promise.all([section('a'), section('b'), section('c')]);
    expect(trace).toEqual(['a+', 'a-', 'b+', 'b-', 'c+', 'c-']);
  });

  it('releases the mutex when a section throws', async () => {
    const mutex = new Mutex();
    await expect(mutex.run(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await mutex.run(() => 42)).toBe(42);
  });
});

describe('RwLock', () => {
  it('lets readers overlap and keeps a writer alone', async () => {
    const lock = new RwLock();
    const trace: string[] = [];
    const reader = (name: string) =>
      lock.read(async () => {
        trace.push(`${name}+`);
        await tick();
        trace.push(`${name}-`);
      });
    const first = reader('r1');
    const second = reader('r2');
    const release = lock.lockWrite().then((unlock) => {
      trace.push('w');
      unlock();
    });
    await Promise.all([first, second, release]);
    expect(trace.slice(0, 2)).toEqual(['r1+', 'r2+']);
    expect(trace.at(-1)).toBe('w');
  });

  it('queues readers behind a waiting writer, and blocks them while the writer holds it', async () => {
    const lock = new RwLock();
    const trace: string[] = [];
    const unlock = await lock.lockWrite();
    const reader = lock.read(() => trace.push('read'));
    await tick();
    expect(trace).toEqual([]);
    unlock();
    await reader;
    expect(trace).toEqual(['read']);
  });
});
