import { expect, it } from 'vitest';
import {
  runReadmeExample,
  typecheckReadmeExamples,
} from '@liveupdate/vitest-config/readme-example';

it('type-checks and runs the README example: the memfd comes back after a live update', () => {
  expect(typecheckReadmeExamples(import.meta.url)).toEqual([]);
  expect(runReadmeExample(import.meta.url)).toBe('hello');
});
