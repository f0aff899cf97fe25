import { describe, expect, it } from 'vitest';
import { validateKernelImage } from './kernel-image.js';

const good = {
  entry: 'file:///kernel/worker.js',
  version: '6.18.0',
  cmdline: 'kho=on',
  modules: ['@acme/handler'],
  moduleBase: 'file:///app/',
};

describe('validateKernelImage', () => {
  it('returns a plain copy of a valid image', () => {
    const image = validateKernelImage(good);
    expect(image).toEqual(good);
    expect(image.modules).not.toBe(good.modules);
  });

  it('keeps rehearse: true and leaves out rehearse: false', () => {
    expect(validateKernelImage({ ...good, rehearse: true })).toEqual({ ...good, rehearse: true });
    expect(validateKernelImage({ ...good, rehearse: false })).toEqual(good);
  });

  it.each([
    ['not an object', null],
    ['an empty version', { ...good, version: '' }],
    ['an entry that is not a file: URL', { ...good, entry: 'https://example.com/k.js' }],
    ['modules that are not strings', { ...good, modules: [1] }],
    ['an empty module specifier', { ...good, modules: [''] }],
    ['a missing cmdline', { ...good, cmdline: undefined }],
    ['a rehearse that is not a boolean', { ...good, rehearse: 'yes' }],
  ])('rejects %s with EINVAL', (_what, image) => {
    expect(() => validateKernelImage(image)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});
