#!/usr/bin/env node
// Writes docs/specs/sealed-batch.schema.json from the TypeBox schema in src/provisioning/sealed-batch/schema.ts
// (via the compiled dist/, so run `npm run build` first). test/provisioning/sealed-batch/schema-file.test.ts fails
// when the file and the code disagree; this script is how to bring them back together.
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { sealedBatchSchemaText } = await import(join(root, 'dist/src/provisioning/sealed-batch/schema.js'));
const out = join(root, 'docs/specs/sealed-batch.schema.json');
writeFileSync(out, sealedBatchSchemaText());
console.log(`Wrote ${out}`);
