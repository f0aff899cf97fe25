import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';

const schema: unknown = JSON.parse(
  readFileSync(new URL('../report.schema.json', import.meta.url), 'utf8'),
);
const ajv = new Ajv2020({ allErrors: true, strict: true });
const validate = ajv.compile(schema as object);

/** What is wrong with `report` by `report.schema.json`, or `null` when it validates. */
export function reportSchemaErrors(report: unknown): string | null {
  return validate(report) ? null : ajv.errorsText(validate.errors);
}
