import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { ProvisioningError, type ProvisioningErrorCode } from '../../../src/provisioning/errors.js';
import { type MakerKeyPair, parseSealedBatch, sealBatch, verifySealedBatch } from '../../../src/provisioning/sealed-batch/index.js';
import { type Recipient, envelopeOf, fileOf, generateMakerKey, makerRegistry, newRecipient, signRaw, testKey } from '../../helpers/sealed-batch.js';

/*
 * Issue 5 §8: every tampering gives its own clear error. The batch here is a real one; each test changes one
 * thing in its bytes and checks the refusal's code (and that nothing is returned).
 */

const refused = (code: ProvisioningErrorCode, message?: RegExp) => (e: unknown) => {
  assert.ok(e instanceof ProvisioningError, `expected a ProvisioningError, got ${String(e)}`);
  assert.equal(e.code, code, e.message);
  if (message) assert.match(e.message, message);
  return true;
};

/** Replaces the base64url character at `at` by another valid one, so only the bytes change. */
function flipChar(text: string, at: number): string {
  const c = text[at]!;
  return `${text.slice(0, at)}${c === 'A' ? 'B' : 'A'}${text.slice(at + 1)}`;
}

describe('sealed batch / verification refuses every tampering with its own error', () => {
  let recipient: Recipient;
  let acme: MakerKeyPair;
  let other: MakerKeyPair;
  let stranger: MakerKeyPair;
  let good: Buffer;
  const registry = () => makerRegistry([{ name: 'acme-sensors', key: acme }, { name: 'other-maker', key: other }]);
  before(async () => {
    recipient = await newRecipient();
    [acme, other, stranger] = await Promise.all([generateMakerKey('ES256'), generateMakerKey('EdDSA'), generateMakerKey('ES256')]);
    good = await sealBatch({
      recipientJwk: recipient.publicJwk,
      signingKey: acme.privateJwk,
      maker: 'acme-sensors',
      content: {
        kind: 'device-keys',
        devices: [
          { devEui: '70B3D57ED0000001', joinEui: '70B3D57ED0000000', macVersion: '1.0.3', appKey: testKey(1, 1) },
          { devEui: '70B3D57ED0000002', joinEui: '70B3D57ED0000000', macVersion: '1.0.3', appKey: testKey(1, 2) },
        ],
      },
    });
  });

  it('the untouched batch verifies', async () => {
    assert.equal((await verifySealedBatch(good, registry())).payload.deviceCount, 2);
  });

  it('a payload byte flipped → BATCH_SIGNATURE_INVALID', async () => {
    const env = envelopeOf(good);
    await assert.rejects(verifySealedBatch(fileOf({ ...env, payload: flipChar(env.payload, 200) }), registry()), refused('BATCH_SIGNATURE_INVALID', /acme-sensors/));
  });

  it('wrapped keys swapped between two devices → BATCH_SIGNATURE_INVALID', async () => {
    const env = envelopeOf(good);
    const p = JSON.parse(Buffer.from(env.payload, 'base64url').toString()) as { devices: { appKey: string }[] };
    [p.devices[0]!.appKey, p.devices[1]!.appKey] = [p.devices[1]!.appKey, p.devices[0]!.appKey];
    await assert.rejects(verifySealedBatch(fileOf({ ...env, payload: Buffer.from(JSON.stringify(p)).toString('base64url') }), registry()), refused('BATCH_SIGNATURE_INVALID'));
  });

  it('the signature changed → BATCH_SIGNATURE_INVALID', async () => {
    const env = envelopeOf(good);
    await assert.rejects(verifySealedBatch(fileOf({ ...env, signature: flipChar(env.signature, 10) }), registry()), refused('BATCH_SIGNATURE_INVALID'));
  });

  it("the header's kid replaced by another registered maker's → BATCH_SIGNATURE_INVALID", async () => {
    const env = envelopeOf(good);
    const header = Buffer.from(JSON.stringify({ alg: 'ES256', kid: other.kid, typ: 'joinkeep-sealed-batch+json' })).toString('base64url');
    await assert.rejects(verifySealedBatch(fileOf({ ...env, protected: header }), registry()), refused('BATCH_SIGNATURE_INVALID', /other-maker/));
  });

  it('signed by a key no maker has registered → MAKER_UNKNOWN', async () => {
    const file = await sealBatch({ recipientJwk: recipient.publicJwk, signingKey: stranger.privateJwk, maker: 'acme-sensors', content: { kind: 'device-keys', devices: [{ devEui: '70B3D57ED0000001', joinEui: '70B3D57ED0000000', macVersion: '1.0.3', appKey: testKey(1, 1) }] } });
    await assert.rejects(verifySealedBatch(file, registry()), refused('MAKER_UNKNOWN', new RegExp(stranger.kid)));
  });

  it("signed with acme's key but claiming another maker → MAKER_MISMATCH", async () => {
    const file = await sealBatch({ recipientJwk: recipient.publicJwk, signingKey: acme.privateJwk, maker: 'other-maker', content: { kind: 'device-keys', devices: [{ devEui: '70B3D57ED0000001', joinEui: '70B3D57ED0000000', macVersion: '1.0.3', appKey: testKey(1, 1) }] } });
    await assert.rejects(verifySealedBatch(file, registry()), refused('MAKER_MISMATCH', /says it is from "other-maker" but is signed with a key of maker "acme-sensors"/));
  });

  it('truncated → BATCH_INVALID', async () => {
    for (const length of [0, 1, 50, Math.floor(good.length / 2), good.length - 3]) {
      await assert.rejects(verifySealedBatch(good.subarray(0, length), registry()), refused('BATCH_INVALID'), `truncated to ${length} bytes`);
    }
  });

  it('not JSON, not UTF-8, or not an envelope → BATCH_INVALID', async () => {
    await assert.rejects(verifySealedBatch(Buffer.from('eyJhbGciOi.eyJ2ZXJz.c2ln'), registry()), refused('BATCH_INVALID', /not valid JSON/));
    await assert.rejects(verifySealedBatch(Buffer.from([0xff, 0xfe, 0x7b]), registry()), refused('BATCH_INVALID', /not UTF-8/));
    await assert.rejects(verifySealedBatch(Buffer.from('[]'), registry()), refused('BATCH_INVALID', /envelope: \$/));
    const env = envelopeOf(good);
    await assert.rejects(verifySealedBatch(fileOf({ ...env, header: { kid: 'x' } }), registry()), refused('BATCH_INVALID', /\$\.header/));
    await assert.rejects(verifySealedBatch(fileOf({ ...env, payload: `${env.payload}=` }), registry()), refused('BATCH_INVALID', /\$\.payload/));
  });

  it('alg "none" → BATCH_ALG_UNSUPPORTED', async () => {
    const env = envelopeOf(good);
    const header = Buffer.from(JSON.stringify({ alg: 'none', kid: acme.kid, typ: 'joinkeep-sealed-batch+json' })).toString('base64url');
    await assert.rejects(verifySealedBatch(fileOf({ protected: header, payload: env.payload, signature: 'AA' }), registry()), refused('BATCH_ALG_UNSUPPORTED', /"none"/));
  });

  it('a header that is not an object, or without alg → BATCH_INVALID', async () => {
    const env = envelopeOf(good);
    for (const header of ['[]', '{"kid":"x","typ":"joinkeep-sealed-batch+json"}']) {
      await assert.rejects(verifySealedBatch(fileOf({ ...env, protected: Buffer.from(header).toString('base64url') }), registry()), refused('BATCH_INVALID', /protected header/));
    }
  });

  it('HS256 with the public key as the HMAC secret → BATCH_ALG_UNSUPPORTED', async () => {
    const env = envelopeOf(good);
    const header = Buffer.from(JSON.stringify({ alg: 'HS256', kid: acme.kid, typ: 'joinkeep-sealed-batch+json' })).toString('base64url');
    const signature = createHmac('sha256', JSON.stringify(acme.publicJwk)).update(`${header}.${env.payload}`).digest('base64url');
    await assert.rejects(verifySealedBatch(fileOf({ protected: header, payload: env.payload, signature }), registry()), refused('BATCH_ALG_UNSUPPORTED', /"HS256"/));
  });

  it('a header naming EdDSA over an ES256 key → BATCH_SIGNATURE_INVALID', async () => {
    const env = envelopeOf(good);
    const header = Buffer.from(JSON.stringify({ alg: 'EdDSA', kid: acme.kid, typ: 'joinkeep-sealed-batch+json' })).toString('base64url');
    await assert.rejects(verifySealedBatch(fileOf({ ...env, protected: header }), registry()), refused('BATCH_SIGNATURE_INVALID'));
  });

  it('extra protected header parameters (crit, jwk) or another typ → BATCH_INVALID', async () => {
    const payload = parseSealedBatch(good).payload;
    await assert.rejects(verifySealedBatch(await signRaw(payload, acme.privateJwk, { jwk: acme.publicJwk }), registry()), refused('BATCH_INVALID', /protected header: \$\.jwk/));
    await assert.rejects(verifySealedBatch(await signRaw(payload, acme.privateJwk, { typ: 'JWT' }), registry()), refused('BATCH_INVALID', /protected header: \$\.typ/));
  });

  it('larger than the size limit → BATCH_TOO_LARGE, before parsing', async () => {
    await assert.rejects(verifySealedBatch(good, registry(), { maxBytes: good.length - 1 }), refused('BATCH_TOO_LARGE', new RegExp(`${good.length} bytes`)));
    await verifySealedBatch(good, registry(), { maxBytes: good.length });
  });

  it('well signed but invalid inside → BATCH_INVALID (the signature does not make a bad batch good)', async () => {
    const p = parseSealedBatch(good).payload as { devices: { devEui: string }[] };
    const dup = { ...p, devices: [p.devices[0], p.devices[0]] };
    await assert.rejects(verifySealedBatch(await signRaw(dup, acme.privateJwk), registry()), refused('BATCH_INVALID', /\$\.devices\[1\]\.devEui 70B3D57ED0000001 is listed twice/));
  });
});
