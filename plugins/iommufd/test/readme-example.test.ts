import { expect, it } from 'vitest';
import { runReadmeExample } from '@liveupdate/vitest-config/readme-example';

it('runs the README example: a memfd is mapped, listed and unmapped', () => {
  expect(runReadmeExample(import.meta.url)).toBe('IOVA 0: 4 MiB of the memfd\nunmapped 4 MiB');
});
