import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { before, describe, it } from 'node:test';
import type { JWK } from 'jose';
import { aes128EcbEncrypt } from '../../../src/custody/primitives.js';
import { ProvisioningError, type ProvisioningErrorCode } from '../../../src/provisioning/errors.js';
import {
  type DeviceKeysInput,
  type MakerKeyPair,
  type OaepHash,
  type SealedBatchPayload,
  parseSealedBatch,
  receivingKeyKid,
  sealBatch,
  signatureAlgorithmOf,
  verifySealedBatch,
} from '../../../src/provisioning/sealed-batch/index.js';
import { vendorKdfInput } from '../../../src/protocol/index.js';
import { type Recipient, generateMakerKey, makerRegistry, newRecipient, openBatchKey, testKey, unwrap } from '../../helpers/sealed-batch.js';
import { watchInputs } from '../../helpers/vectors.js';

const refused = (code: ProvisioningErrorCode, message?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof ProvisioningError, `expected a ProvisioningError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  if (message) assert.match(e.message, message);
  return true;
};

function devices(): DeviceKeysInput[] {
  return [
    { devEui: '70B3D57ED0000001', joinEui: '70B3D57ED0000000', macVersion: '1.0.3', appKey: testKey(0xa1, 1), profile: 'acme-th-v2', serialNumber: 'SN-1', claimCodeHash: 'a'.repeat(64) },
    { devEui: '70B3D57ED0000002', joinEui: '70B3D57ED0000000', macVersion: '1.1', appKey: testKey(0xa1, 2), nwkKey: testKey(0xb1, 2) },
    { devEui: '70b3d57ed0000003', joinEui: '70b3d57ed0000000', macVersion: '1.0.2b', appKey: testKey(0xa1, 3) },
  ];
}

describe('sealed batch / seal → parse → verify, real crypto', () => {
  let recipient: Recipient;
  let es256: MakerKeyPair;
  let eddsa: MakerKeyPair;
  before(async () => {
    recipient = await newRecipient();
    es256 = await generateMakerKey('ES256');
    eddsa = await generateMakerKey('EdDSA');
  });
  const registry = () => makerRegistry([{ name: 'acme-sensors', key: es256 }, { name: 'se-vendor', key: eddsa }]);

  for (const oaep of ['sha1', 'sha256'] as OaepHash[]) {
    for (const kind of ['device-keys'] as const) {
      it(`${kind} / OAEP ${oaep} / the batch key decrypts with the receiving key and every key unwraps to its input`, async () => {
        const input = devices();
        const unchanged = watchInputs(...input.flatMap((d) => [d.appKey, ...(d.nwkKey ? [d.nwkKey] : [])]));
        const file = await sealBatch({ recipientJwk: recipient.publicJwk, signingKey: es256.privateJwk, maker: 'acme-sensors', oaep, content: { kind, devices: input } });
        unchanged();
        const { payload, maker, header } = await verifySealedBatch(file, registry());
        assert.equal(maker, 'acme-sensors');
        assert.deepEqual(header, { alg: 'ES256', kid: es256.kid, typ: 'joinkeep-sealed-batch+json' });
        assert.equal(payload.kind, kind);
        assert.ok(payload.kind === 'device-keys');
        assert.equal(payload.recipient.kid, recipient.kid);
        assert.equal(payload.batchKey.alg, oaep === 'sha1' ? 'RSA-OAEP' : 'RSA-OAEP-256');
        const batchKey = openBatchKey(recipient, payload.batchKey);
        assert.equal(batchKey.length, 32);
        assert.equal(payload.deviceCount, 3);
        payload.devices.forEach((d, i) => {
          const sealed = input[i]!;
          assert.equal(d.devEui, sealed.devEui.toUpperCase(), 'EUIs are canonical upper case');
          assert.deepEqual(unwrap(batchKey, d.appKey), sealed.appKey);
          if (sealed.nwkKey) assert.deepEqual(unwrap(batchKey, d.nwkKey!), sealed.nwkKey);
          else assert.equal(d.nwkKey, undefined);
        });
        assert.equal(payload.devices[2]!.macVersion, '1.0.2', 'MAC version spelled canonically');
        assert.equal(payload.devices[0]!.profile, 'acme-th-v2');
        assert.equal(payload.devices[0]!.serialNumber, 'SN-1');
        // parse alone gives the same payload and the signing input the signature covers
        const parsed = parseSealedBatch(file);
        assert.deepEqual(parsed.payload, payload);
        const env = JSON.parse(file.toString()) as { protected: string; payload: string };
        assert.equal(parsed.signingInput.toString('ascii'), `${env.protected}.${env.payload}`);
      });
    }

    it(`derivation-master / OAEP ${oaep} / the master key unwraps, and derives the JK-KDF-1 vector`, async () => {
      const master = Buffer.from('000102030405060708090A0B0C0D0E0F', 'hex');
      const file = await sealBatch({ recipientJwk: recipient.publicJwk, signingKey: eddsa.privateJwk, maker: 'se-vendor', oaep, content: { kind: 'derivation-master', masterKeyId: 'se-vendor-2026-a', masterKey: master } });
      const { payload, header } = await verifySealedBatch(file, registry());
      assert.equal(header.alg, 'EdDSA');
      assert.ok(payload.kind === 'derivation-master');
      assert.equal(payload.deviceCount, 0);
      assert.deepEqual(payload.devices, []);
      assert.equal(payload.derivationMaster.id, 'se-vendor-2026-a');
      const unwrapped = unwrap(openBatchKey(recipient, payload.batchKey), payload.derivationMaster.wrappedKey);
      assert.deepEqual(unwrapped, master);
      // test/vectors/vendor-kdf.json, first row
      assert.equal(aes128EcbEncrypt(unwrapped, vendorKdfInput('70B3D57ED0000001', 'AppKey')).toString('hex').toUpperCase(), '07EA4B15C076B87F54C722D05543FB5D');
    });
  }

  it('derived / carries identities and the master id, no batch key and no keys', async () => {
    const ids = devices().map(({ appKey: _a, nwkKey: _n, ...id }) => id);
    const file = await sealBatch({ recipientJwk: recipient.publicJwk, signingKey: eddsa.privateJwk, maker: 'se-vendor', content: { kind: 'derived', derivedFrom: 'se-vendor-2026-a', devices: ids } });
    const { payload } = await verifySealedBatch(file, registry());
    assert.ok(payload.kind === 'derived');
    assert.equal(payload.derivedFrom, 'se-vendor-2026-a');
    assert.equal('batchKey' in payload, false);
    assert.deepEqual(payload.devices.map((d) => Object.keys(d).filter((k) => /key/i.test(k) && k !== 'claimCodeHash')), [[], [], []]);
  });

  it('a fresh batch key and batch id every time', async () => {
    const seal = () => sealBatch({ recipientJwk: recipient.publicJwk, signingKey: es256.privateJwk, maker: 'acme-sensors', content: { kind: 'device-keys', devices: devices() } });
    const [a, b] = (await Promise.all([seal(), seal()])).map((f) => parseSealedBatch(f).payload as Extract<SealedBatchPayload, { kind: 'device-keys' }>);
    assert.notEqual(a!.batchId, b!.batchId);
    assert.notDeepEqual(openBatchKey(recipient, a!.batchKey), openBatchKey(recipient, b!.batchKey));
    assert.notEqual(a!.devices[0]!.appKey, b!.devices[0]!.appKey);
  });

  describe('refusals at sealing', () => {
    const seal = (over: { recipientJwk?: JWK; signingKey?: JWK; devices?: DeviceKeysInput[] }) =>
      sealBatch({ recipientJwk: over.recipientJwk ?? recipient.publicJwk, signingKey: over.signingKey ?? es256.privateJwk, maker: 'acme-sensors', content: { kind: 'device-keys', devices: over.devices ?? devices() } });

    it('a duplicate DevEUI', async () => {
      const d = devices();
      await assert.rejects(seal({ devices: [...d, { ...d[0]!, devEui: '70b3d57ed0000001' }] }), refused('INVALID_INPUT', /\$\.devices\[3\]\.devEui 70B3D57ED0000001 is listed twice/));
    });
    it('a LoRaWAN 1.1 device without NwkKey, and a 1.0.x device with one', async () => {
      const d = devices();
      await assert.rejects(seal({ devices: [{ ...d[1]!, nwkKey: undefined }] as DeviceKeysInput[] }), refused('INVALID_INPUT', /nwkKey is missing/));
      await assert.rejects(seal({ devices: [{ ...d[0]!, nwkKey: testKey(1, 1) }] }), refused('INVALID_INPUT', /nwkKey must be absent/));
    });
    it('a key that is not 16 bytes', async () => {
      await assert.rejects(seal({ devices: [{ ...devices()[0]!, appKey: Buffer.alloc(32, 1) }] }), refused('INVALID_INPUT', /AppKey of 70B3D57ED0000001 must be 16 bytes/));
    });
    it('a recipient JWK with the private key in it', async () => {
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      await assert.rejects(seal({ recipientJwk: privateKey.export({ format: 'jwk' }) as JWK }), refused('INVALID_INPUT', /private key/));
    });
    it('a recipient key below 2048 bits, or not RSA', async () => {
      const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
      await assert.rejects(seal({ recipientJwk: publicKey.export({ format: 'jwk' }) as JWK }), refused('INVALID_INPUT', /1024 bits/));
      await assert.rejects(seal({ recipientJwk: es256.publicJwk }), refused('INVALID_INPUT', /RSA public JWK/));
    });
    it('a recipient JWK whose kid is not its thumbprint', async () => {
      await assert.rejects(seal({ recipientJwk: { ...recipient.publicJwk, kid: 'edited' } }), refused('INVALID_INPUT', /not its thumbprint/));
    });
    it('a signing key that is public, or of another type', async () => {
      await assert.rejects(seal({ signingKey: es256.publicJwk }), refused('INVALID_INPUT', /private JWK/));
      assert.throws(() => signatureAlgorithmOf({ kty: 'EC', crv: 'P-384', d: 'x' }), refused('INVALID_INPUT', /P-256/));
    });
  });

  it('receivingKeyKid is the RFC 7638 thumbprint (RFC 7638 §3.1 example key)', async () => {
    const rfc7638 = {
      kty: 'RSA',
      n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
      e: 'AQAB',
    };
    assert.equal(await receivingKeyKid(rfc7638), 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs');
  });
});
