import 'reflect-metadata';
import { describe, expect, it } from 'vitest';
import { KernelError } from '@liveupdate/machine';
import { RebootNotifierChain, type RebootNotifier } from './reboot-notifier-chain.js';

/** Notifiers that record `notify:<name>` and `abort:<name>` in one shared journal. */
function recorder() {
  const journal: string[] = [];
  const make = (
    name: string,
    options: { priority?: number; fail?: unknown; failAbort?: unknown; noAbort?: boolean } = {},
  ): RebootNotifier => ({
    name,
    ...(options.priority === undefined ? {} : { priority: options.priority }),
    notify() {
      journal.push(`notify:${name}`);
      if (options.fail !== undefined) throw options.fail;
    },
    ...(options.noAbort
      ? {}
      : {
          abort() {
            journal.push(`abort:${name}`);
            if (options.failAbort !== undefined) throw options.failAbort;
          },
        }),
  });
  return { journal, make };
}

const ignoreAbortErrors = (): void => {};

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
}

describe('RebootNotifierChain', () => {
  it('calls notifiers from the highest priority down, equal priorities in registration order', async () => {
    const chain = new RebootNotifierChain();
    const { journal, make } = recorder();
    chain.register(make('a', { priority: 0 }));
    chain.register(make('b', { priority: 10 }));
    chain.register(make('c', { priority: -5 }));
    chain.register(make('d', { priority: 10 }));
    chain.register(make('e'));
    await chain.call(ignoreAbortErrors);
    expect(journal).toEqual(['notify:b', 'notify:d', 'notify:a', 'notify:e', 'notify:c']);
  });

  it('waits for each async notifier before calling the next', async () => {
    const chain = new RebootNotifierChain();
    const journal: string[] = [];
    for (const name of ['first', 'second']) {
      chain.register({
        name,
        async notify() {
          journal.push(`start:${name}`);
          await new Promise((resolve) => setTimeout(resolve, 2));
          journal.push(`end:${name}`);
        },
      });
    }
    await chain.call(ignoreAbortErrors);
    expect(journal).toEqual(['start:first', 'end:first', 'start:second', 'end:second']);
  });

  it('aborts the notifiers that succeeded, in reverse, when one fails, and keeps its KernelError', async () => {
    const chain = new RebootNotifierChain();
    const { journal, make } = recorder();
    const failure = new KernelError('EBUSY', 'session busy');
    chain.register(make('low', { priority: 1 }));
    chain.register(make('top', { priority: 3 }));
    chain.register(make('mid', { priority: 2 }));
    chain.register(make('luo', { priority: 1, fail: failure }));
    chain.register(make('late', { priority: 0 }));
    const error = await rejection(chain.call(ignoreAbortErrors));
    expect(error).toBe(failure);
    expect((error as KernelError).errno).toBe(16);
    expect(journal).toEqual([
      'notify:top',
      'notify:mid',
      'notify:low',
      'notify:luo',
      'abort:low',
      'abort:mid',
      'abort:top',
    ]);
  });

  it('turns a plain Error from a notifier into EIO, with the original as cause', async () => {
    const chain = new RebootNotifierChain();
    const { journal, make } = recorder();
    const original = new Error('disk full');
    chain.register(make('ok'));
    chain.register(make('broken', { fail: original }));
    const error = await rejection(chain.call(ignoreAbortErrors));
    expect(KernelError.isInstance(error)).toBe(true);
    expect(error).toMatchObject({ code: 'EIO', errno: 5 });
    expect((error as KernelError).cause).toBe(original);
    expect((error as KernelError).message).toContain('broken');
    expect((error as KernelError).message).toContain('disk full');
    expect(journal).toEqual(['notify:ok', 'notify:broken', 'abort:ok']);
  });

  it('reports abort failures to the callback, keeps aborting the rest, and still throws the first error', async () => {
    const chain = new RebootNotifierChain();
    const { journal, make } = recorder();
    const abortFailure = new Error('cannot undo');
    chain.register(make('one'));
    chain.register(make('two', { failAbort: abortFailure }));
    chain.register(make('three', { noAbort: true }));
    chain.register(make('four', { fail: new KernelError('ENOSPC') }));
    const reported: [string, unknown][] = [];
    const error = await rejection(chain.call((notifier, e) => reported.push([notifier.name, e])));
    expect(error).toMatchObject({ code: 'ENOSPC' });
    expect(reported).toEqual([['two', abortFailure]]);
    expect(journal).toEqual([
      'notify:one',
      'notify:two',
      'notify:three',
      'notify:four',
      'abort:two',
      'abort:one',
    ]);
  });

  it('returns a function that aborts every notifier in reverse order after a later failure', async () => {
    const chain = new RebootNotifierChain();
    const { journal, make } = recorder();
    chain.register(make('a', { priority: 2 }));
    chain.register(make('b', { priority: 1 }));
    chain.register(make('c', { noAbort: true }));
    chain.register(make('d', { priority: -1 }));
    const abort = await chain.call(ignoreAbortErrors);
    expect(journal).toEqual(['notify:a', 'notify:b', 'notify:c', 'notify:d']);
    await abort();
    expect(journal.slice(4)).toEqual(['abort:d', 'abort:b', 'abort:a']);
  });

  it('refuses to register a notifier twice with EEXIST and to unregister an unknown one with ENOENT', async () => {
    const chain = new RebootNotifierChain();
    const { journal, make } = recorder();
    const a = make('a');
    const b = make('b');
    chain.register(a);
    expect(() => chain.register(a)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(() => chain.unregister(b)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    chain.register(b);
    chain.unregister(a);
    await chain.call(ignoreAbortErrors);
    expect(journal).toEqual(['notify:b']);
  });
});
