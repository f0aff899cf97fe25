import { expect, it } from 'vitest';
import { runReadmeExample } from '@liveupdate/vitest-config/readme-example';

it('runs the README example: the copy engine copies inside guest RAM', () => {
  expect(runReadmeExample(import.meta.url)).toBe('hello');
});
