import { expect, it } from 'vitest';
import {
  runReadmeExample,
  typecheckReadmeExamples,
} from '@liveupdate/vitest-config/readme-example';

it('type-checks every TypeScript example of the README', () => {
  expect(typecheckReadmeExamples(import.meta.url)).toEqual([]);
});

it('runs the README example: a counter in a preserved page counts the second boot', () => {
  const output = runReadmeExample(import.meta.url, {
    main: "import { LINUX_REBOOT_CMD_KEXEC, Machine } from '@liveupdate/machine';",
    modules: { 'counter-module.js': '// counter-module.ts' },
  });
  expect(output).toBe('2n');
});
