import { expect, it } from 'vitest';
import {
  runReadmeExample,
  typecheckReadmeExamples,
} from '@liveupdate/vitest-config/readme-example';

it('type-checks every TypeScript example of the README', () => {
  expect(typecheckReadmeExamples(import.meta.url)).toEqual([]);
});

it('runs the README example: unread events come back after a live update', () => {
  expect(runReadmeExample(import.meta.url)).toBe('link up, disk full');
});
