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
  it('refuses to destroy an IOAS that a HWPT uses with EBUSY, and keeps it', async () => {
    const freed: number[] = [];
    const ictx = new IommufdContext({
      ...kernel,
      iommu: {
        allocDomain: () => ({ id: 7, pageTableRoot: 0x7000 }),
        freeDomain: (domain: { id: number }) => freed.push(domain.id),
        unmap: () => 0,
      },
    } as unknown as IoasKernel);
    const ioas = ictx.allocIoas();
    const hwpt = ictx.allocHwptPaging(ioas, false);
    expect(ioas.users).toBe(1);
    expect(await errnoOf(ictx.destroy(ioas.id))).toBe('EBUSY');
    expect(ictx.getIoas(ioas.id)).toBe(ioas);
    await ictx.destroy(hwpt.id);
    expect(freed).toEqual([7]);
    expect(ioas.users).toBe(0);
    await ictx.destroy(ioas.id);
    expect(() => ictx.getIoas(ioas.id)).toThrow(/no IOAS with id 1/);
  });

  it('finds no IOAS under the id of another object type', () => {
    const ictx = new IommufdContext({
      ...kernel,
      iommu: { allocDomain: () => ({ id: 1, pageTableRoot: 0 }) },
    } as unknown as IoasKernel);
    const hwpt = ictx.allocHwptPaging(ictx.allocIoas(), false);
    expect(() => ictx.getIoas(hwpt.id)).toThrow(/no IOAS with id 2/);
    expect(ictx.getObject(hwpt.id)).toBe(hwpt);
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
