import { expect, it } from 'vitest';
import {
  runReadmeExample,
  typecheckReadmeExamples,
} from '@liveupdate/vitest-config/readme-example';

it('type-checks every TypeScript example of the README', () => {
  expect(typecheckReadmeExamples(import.meta.url)).toEqual([]);
});

it('runs the README example: a memfd is mapped, listed and unmapped', () => {
  expect(runReadmeExample(import.meta.url)).toBe('IOVA 0: 4 MiB of the memfd\nunmapped 4 MiB');
});
