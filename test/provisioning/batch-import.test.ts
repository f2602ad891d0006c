import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type KeyCustody, SoftwareKeyCustody } from '../../src/custody/index.js';
import { importSealedBatch } from '../../src/provisioning/batch-import.js';
import { bindInventoryDevices } from '../../src/provisioning/bind.js';
import { ProvisioningError } from '../../src/provisioning/errors.js';
import { addMaker } from '../../src/provisioning/makers.js';
import { type MakerKeyPair, generateMakerKey, sealBatch, signSealedBatch } from '../../src/provisioning/sealed-batch/index.js';
import { type SqliteStorage, type Storage, openSqliteStorage } from '../../src/storage/index.js';

/*
 * The import service's refusals that the CLI end-to-end suite does not reach, in process on a real SQLite database
 * and the software keystore. Each refusal is checked to leave custody, the inventory and the audit trail unchanged.
 */

const JOIN_EUI = '70B3D57ED00A00FF';
const rejectsWith = (code: string) => (e: unknown) => e instanceof ProvisioningError && e.code === code;

describe('provisioning / sealed batch import (service)', () => {
  let dir: string;
  let storage: SqliteStorage;
  let custody: KeyCustody;
  let acme: MakerKeyPair;
  let other: MakerKeyPair;
  let recipientJwk: Awaited<ReturnType<KeyCustody['createReceivingKey']>>['jwk'];
  const deps = () => ({ storage: storage as Storage, custody, actor: 'test' });
  const devices = (start: string, n: number) =>
    Array.from({ length: n }, (_, i) => ({ devEui: (BigInt(`0x${start}`) + BigInt(i)).toString(16).toUpperCase().padStart(16, '0'), joinEui: JOIN_EUI, macVersion: '1.0.3', appKey: randomBytes(16) }));
  const state = async () => ({
    keys: (await custody.listKeys()).map((k) => k.handle).sort(),
    inventory: (await storage.listInventory({ limit: 1000 })).items.length,
    audit: (await storage.listAudit({ limit: 1000 })).items.length,
  });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'joinkeep-import-'));
    storage = await openSqliteStorage(join(dir, 'joinkeep.db'));
    await storage.migrate();
    custody = new SoftwareKeyCustody(storage, randomBytes(32));
    recipientJwk = (await custody.createReceivingKey()).jwk;
    acme = await generateMakerKey('ES256');
    other = await generateMakerKey('EdDSA');
    const audit = storage;
    await addMaker({ storage, audit, actor: 'test' }, { name: 'acme', kind: 'device-maker', publicJwk: acme.publicJwk });
    await addMaker({ storage, audit, actor: 'test' }, { name: 'other-vendor', kind: 'se-vendor', publicJwk: other.publicJwk });
  });
  after(async () => {
    await custody.close();
    await storage.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('the same batch id with other contents / BATCH_ID_REUSED, nothing imported', async () => {
    const batchId = randomUUID();
    await importSealedBatch(deps(), await sealBatch({ recipientJwk, signingKey: acme.privateJwk, maker: 'acme', batchId, content: { kind: 'device-keys', devices: devices('70B3D57ED00A0000', 2) } }));
    const before = await state();
    const reused = await sealBatch({ recipientJwk, signingKey: acme.privateJwk, maker: 'acme', batchId, content: { kind: 'device-keys', devices: devices('70B3D57ED00A0100', 2) } });
    await assert.rejects(importSealedBatch(deps(), reused), rejectsWith('BATCH_ID_REUSED'));
    assert.deepEqual(await state(), before);
  });

  it('a batch key that is not the receiving key\'s / UNWRAP_FAILED, nothing imported', async () => {
    const file = await sealBatch({ recipientJwk, signingKey: acme.privateJwk, maker: 'acme', content: { kind: 'device-keys', devices: devices('70B3D57ED00A0200', 3) } });
    // Signed by acme, but the encrypted batch key replaced by random bytes of the right length.
    const envelope = JSON.parse(file.toString('utf8')) as { payload: string };
    const payload = JSON.parse(Buffer.from(envelope.payload, 'base64url').toString('utf8')) as { batchId: string; batchKey: { encryptedKey: string } };
    payload.batchId = randomUUID();
    payload.batchKey.encryptedKey = randomBytes(384).toString('base64url');
    const before = await state();
    await assert.rejects(importSealedBatch(deps(), await signSealedBatch(payload as never, acme.privateJwk)), rejectsWith('UNWRAP_FAILED'));
    assert.deepEqual(await state(), before);
  });

  it('a derived batch naming another vendor\'s master / DERIVATION_KEY_UNKNOWN, nothing imported', async () => {
    await importSealedBatch(deps(), await sealBatch({ recipientJwk, signingKey: other.privateJwk, maker: 'other-vendor', content: { kind: 'derivation-master', masterKeyId: 'vendor-m1', masterKey: randomBytes(16) } }));
    const before = await state();
    const derived = await sealBatch({ recipientJwk, signingKey: acme.privateJwk, maker: 'acme', content: { kind: 'derived', derivedFrom: 'vendor-m1', devices: devices('70B3D57ED00A0300', 2).map(({ appKey: _, ...d }) => d) } });
    await assert.rejects(importSealedBatch(deps(), derived), rejectsWith('DERIVATION_KEY_UNKNOWN'));
    assert.deepEqual(await state(), before);
  });

  it('the database refuses the batch after custody took the keys / the keys are removed again', async () => {
    const before = await state();
    const failing = new Proxy(storage, {
      get(target, prop, receiver) {
        if (prop === 'importBatch') return async () => Promise.reject(new Error('disk full'));
        const value = Reflect.get(target, prop, receiver) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const file = await sealBatch({ recipientJwk, signingKey: acme.privateJwk, maker: 'acme', content: { kind: 'device-keys', devices: devices('70B3D57ED00A0400', 4) } });
    await assert.rejects(importSealedBatch({ storage: failing as Storage, custody, actor: 'test' }, file), /disk full/);
    assert.deepEqual(await state(), before, 'no key left in custody, nothing in the inventory');
  });

  it('a maker key given with its private part / refused; a maker registered twice / refused', async () => {
    const audit = storage;
    await assert.rejects(addMaker({ storage, audit, actor: 'test' }, { name: 'leaky', kind: 'device-maker', publicJwk: acme.privateJwk }), (e: unknown) => e instanceof ProvisioningError && /private key/.test(e.message));
    await assert.rejects(addMaker({ storage, audit, actor: 'test' }, { name: 'acme-again', kind: 'device-maker', publicJwk: acme.publicJwk }), /already registered/);
    assert.deepEqual((await storage.listMakers()).map((m) => m.name), ['acme', 'other-vendor']);
  });

  it('binding a whole batch / every device still in its inventory moves; a batch with none left is refused', async () => {
    const batchId = randomUUID();
    await importSealedBatch(deps(), await sealBatch({ recipientJwk, signingKey: acme.privateJwk, maker: 'acme', batchId, content: { kind: 'device-keys', devices: devices('70B3D57ED00A0500', 3) } }));
    const bound = await bindInventoryDevices({ storage, actor: 'test' }, { batchId, homeNetId: '000013', asId: 'as-1' });
    assert.equal(bound.length, 3);
    assert.equal((await storage.getDevice(bound[0]!.devEui))?.asId, 'as-1');
    await assert.rejects(bindInventoryDevices({ storage, actor: 'test' }, { batchId, homeNetId: '000013' }), rejectsWith('INVALID_INPUT'));
    await assert.rejects(bindInventoryDevices({ storage, actor: 'test' }, { devEuis: ['70B3D57ED00A0600'], homeNetId: 'ZZ' }), rejectsWith('INVALID_INPUT'));
  });
});
