import { describe, expect, it } from 'vitest';
import { ERRNO, isErrnoName } from './errno.js';
import { KernelError } from './kernel-error.js';

describe('KernelError', () => {
  it('carries the errno name and the Linux number for it', () => {
    const error = new KernelError('EBUSY', 'device in use', { syscall: 'open' });
    expect(error.code).toBe('EBUSY');
    expect(error.errno).toBe(16);
    expect(error.syscall).toBe('open');
    expect(error.message).toBe('EBUSY: device in use');
  });

  it('uses Linux x86-64 errno numbers, not the host platform’s', () => {
    expect(ERRNO).toMatchObject({
      EPERM: 1,
      ENOENT: 2,
      EBADF: 9,
      ENOMEM: 12,
      EFAULT: 14,
      EEXIST: 17,
      EINVAL: 22,
      ENOTTY: 25,
      ENOSPC: 28,
      EOPNOTSUPP: 95,
      EADDRINUSE: 98,
    });
  });

  it('is recognized by isInstance through its marker, not by its shape', () => {
    const error = new KernelError('EIO');
    expect(KernelError.isInstance(error)).toBe(true);
    expect(KernelError.isInstance(new Error('EIO'))).toBe(false);
    expect(KernelError.isInstance({ code: 'EIO' })).toBe(false);
  });

  it('tells errno names from other strings', () => {
    expect(isErrnoName('EINVAL')).toBe(true);
    expect(isErrnoName('toString')).toBe(false);
    expect(isErrnoName(22)).toBe(false);
  });
});
