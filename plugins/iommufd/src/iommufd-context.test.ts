import { describe, expect, it } from 'vitest';
import { KernelError } from '@liveupdate/kernel';
import { IommufdContext } from './iommufd-context.js';
import type { IoasKernel } from './iommufd-ioas.js';

// Empty IOAS objects never reach the page allocator or the VFS.
const kernel = {} as IoasKernel;

async function errnoOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    if (KernelError.isInstance(error)) return error.code;
    throw error;
  }
}

describe('IommufdContext', () => {
  it('refuses to destroy an IOAS that another object uses with EBUSY, and keeps it', async () => {
    const ictx = new IommufdContext(kernel);
    const ioas = ictx.allocIoas();
    ioas.users = 1;
    expect(await errnoOf(ictx.destroy(ioas.id))).toBe('EBUSY');
    expect(ictx.getIoas(ioas.id)).toBe(ioas);
    ioas.users = 0;
    await ictx.destroy(ioas.id);
    expect(() => ictx.getIoas(ioas.id)).toThrow(/no IOAS with id 1/);
  });

  it('never hands out id 0 and destroys nothing there', async () => {
    const ictx = new IommufdContext(kernel);
    expect(ictx.allocIoas().id).toBe(1);
    expect(await errnoOf(ictx.destroy(0))).toBe('ENOENT');
  });

  it('releases every object, newest first', async () => {
    const ictx = new IommufdContext(kernel);
    ictx.allocIoas();
    ictx.allocIoas();
    await ictx.release();
    expect(ictx.objects).toEqual([]);
  });
});
