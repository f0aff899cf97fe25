import { expect, it } from 'vitest';
import { runReadmeExample } from '@liveupdate/vitest-config/readme-example';

it('runs the README example: unread events come back after a live update', () => {
  expect(runReadmeExample(import.meta.url)).toBe('link up, disk full');
});
