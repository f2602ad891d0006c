import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Ajv2020 from 'ajv/dist/2020.js';
import { sealedBatchSchemaText } from '../../../src/provisioning/sealed-batch/index.js';
import { projectRoot } from '../../helpers/vectors.js';

/*
 * docs/specs/sealed-batch.schema.json is generated from the TypeBox schema; this test fails when they drift
 * (regenerate with `npm run build && node scripts/write-batch-schema.mjs`). The published file is also compiled
 * by an independent JSON Schema 2020-12 validator (Ajv, which Fastify already brings), which must agree with
 * Joinkeep's own parser on a valid payload and a few invalid ones.
 */

const file = join(projectRoot(), 'docs/specs/sealed-batch.schema.json');
const WRAPPED = 'A'.repeat(32);
const example = {
  version: 1,
  batchId: '3b241101-e2bb-4255-8caf-4136c566a962',
  kind: 'device-keys',
  maker: 'acme-sensors',
  createdAt: '2026-11-23T12:00:00.000Z',
  recipient: { kid: 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs' },
  batchKey: { alg: 'RSA-OAEP-256', encryptedKey: 'B'.repeat(512) },
  deviceCount: 1,
  devices: [{ devEui: '70B3D57ED0000001', joinEui: '70B3D57ED0000000', macVersion: '1.1', appKey: WRAPPED, nwkKey: WRAPPED }],
};

describe('sealed batch / published JSON Schema', () => {
  it('docs/specs/sealed-batch.schema.json equals the schema the code produces', () => {
    assert.equal(readFileSync(file, 'utf8'), sealedBatchSchemaText(), 'the schema file is stale: run `npm run build && node scripts/write-batch-schema.mjs`');
  });

  it('is valid JSON Schema 2020-12 and agrees with the parser on examples', () => {
    const Ajv = Ajv2020 as unknown as new (o: object) => { compile(s: object): ((v: unknown) => boolean) & { errors?: unknown } };
    const validate = new Ajv({ strict: true, allErrors: true }).compile(JSON.parse(readFileSync(file, 'utf8')) as object);
    assert.equal(validate(example), true, JSON.stringify(validate.errors));
    assert.equal(validate({ ...example, kind: 'derived' }), false);
    assert.equal(validate({ ...example, devices: [{ ...example.devices[0], devEui: '70b3d57ed0000001' }] }), false);
    assert.equal(validate({ ...example, extra: 1 }), false);
    const { batchKey: _b, ...derived } = example;
    assert.equal(validate({ ...derived, kind: 'derived', derivedFrom: 'm1', devices: [{ devEui: '70B3D57ED0000001', joinEui: '70B3D57ED0000000', macVersion: '1.1' }] }), true, JSON.stringify(validate.errors));
  });
});
