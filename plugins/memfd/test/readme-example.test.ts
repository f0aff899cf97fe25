import { expect, it } from 'vitest';
import { runReadmeExample } from '@liveupdate/vitest-config/readme-example';

it('runs the README example: a sealed memfd comes back after a live update', () => {
  expect(runReadmeExample(import.meta.url)).toBe('hello, next kernel true');
});
