import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { provisioningErrorCodes } from '../../../src/provisioning/errors.js';
import { projectRoot } from '../../helpers/vectors.js';

/** STYLE rule 6: every code a sealed batch or the maker tool can produce is documented in the spec. */
const spec = readFileSync(join(projectRoot(), 'docs/specs/sealed-batch.md'), 'utf8');
const batchCodes = provisioningErrorCodes.filter((c) => /^(BATCH_|MAKER_|OUTPUT_)/.test(c));

describe('sealed batch / error codes are documented', () => {
  it('there are sealed-batch codes', () => assert.ok(batchCodes.length >= 7));
  for (const code of batchCodes) {
    it(`${code} appears in docs/specs/sealed-batch.md`, () => assert.ok(spec.includes(`\`${code}\``), `${code} is not in the spec`));
  }
});
