import assert from 'node:assert/strict';
import { constants, createCipheriv, createDecipheriv, generateKeyPairSync, privateDecrypt, publicEncrypt, randomBytes } from 'node:crypto';
import { before, describe, it } from 'node:test';
import { CustodyError, rootKeyHandle } from '../../src/custody/index.js';
import { exportSealedTrusted, openPkcs11Custody } from '../../src/custody/pkcs11/index.js';
import { receivingKeyJwkOf } from '../../src/custody/receiving-key.js';
import { type TestToken, createTestToken, softhsmModulePath } from '../helpers/softhsm.js';

/*
 * exportSealedTrusted (src/custody/pkcs11/trusted-export.ts) on SoftHSM2: root keys imported in trusted-KEK mode
 * leave sealed to a recipient and open with its private key to the very keys imported; keys imported outside the
 * mode are refused; in a pool the export runs on the first member that opens.
 */

const IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');
const wrap = (kek: Buffer, key: Buffer): Buffer => {
  const c = createCipheriv(kek.length === 32 ? 'id-aes256-wrap' : 'id-aes128-wrap', kek, IV);
  return Buffer.concat([c.update(key), c.final()]);
};
const unwrap = (kek: Buffer, wrapped: Buffer): Buffer => {
  const d = createDecipheriv(kek.length === 32 ? 'id-aes256-wrap' : 'id-aes128-wrap', kek, IV);
  return Buffer.concat([d.update(wrapped), d.final()]);
};

/** Imports `keys` into the token through a sealed batch (the only way root keys enter in trusted-KEK mode). */
async function importRoots(token: TestToken, trustedKeks: boolean, keys: Map<string, Buffer>): Promise<void> {
  const custody = await openPkcs11Custody({ modulePath: softhsmModulePath(), tokens: [{ label: token.label, pin: token.pin }], trustedKeks });
  try {
    const receiving = await custody.createReceivingKey();
    const batchKey = randomBytes(32);
    const { n, e } = receiving.jwk;
    const { createPublicKey } = await import('node:crypto');
    const pub = createPublicKey({ key: { kty: 'RSA', n, e }, format: 'jwk' });
    await custody.importSealed({
      receivingKid: receiving.kid,
      batchKey: { oaep: 'sha1', encrypted: publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, batchKey) },
      keys: [...keys].map(([handle, key]) => ({ handle, usage: 'root' as const, wrapped: wrap(batchKey, key) })),
    });
  } finally {
    await custody.close();
  }
}

describe('pkcs11 / transfer export in trusted-KEK mode (SoftHSM2)', { timeout: 120_000 }, () => {
  let trusted: TestToken;
  let plain: TestToken;
  const recipient = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = receivingKeyJwkOf(recipient.publicKey);
  const keys = new Map([0, 1, 2].map((i) => [rootKeyHandle(`70B3D57ED00B000${i}`, 'AppKey', 'x1'), randomBytes(16)] as const));
  const plainKey = new Map([[rootKeyHandle('70B3D57ED00C0000', 'AppKey', 'x1'), randomBytes(16)]]);

  before(async () => {
    trusted = createTestToken('texp');
    plain = createTestToken('pexp');
    await importRoots(trusted, true, keys);
    await importRoots(plain, false, plainKey);
  });

  const member = (t: TestToken) => ({ label: t.label, pin: t.pin, soPin: t.soPin });

  it('root keys imported in the mode / sealed with OAEP SHA-1, they open with the recipient\'s private key to the keys imported', () => {
    const handles = [...keys.keys()];
    const sealed = exportSealedTrusted(softhsmModulePath(), [member(trusted)], jwk, 'sha1', handles);
    const batchKey = privateDecrypt({ key: recipient.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, sealed.encryptedBatchKey);
    assert.equal(batchKey.length, 32);
    assert.deepEqual(sealed.wrapped.map((w) => unwrap(batchKey, w).toString('hex')), handles.map((h) => keys.get(h)!.toString('hex')));
    // A second export uses a fresh batch key.
    const again = exportSealedTrusted(softhsmModulePath(), [member(trusted)], jwk, 'sha1', handles.slice(0, 1));
    assert.ok(!privateDecrypt({ key: recipient.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, again.encryptedBatchKey).equals(batchKey));
  });

  it('a pool / the first member that opens exports (a member with a refused PIN is passed over)', () => {
    const handles = [...keys.keys()].slice(0, 1);
    const sealed = exportSealedTrusted(softhsmModulePath(), [{ ...member(plain), pin: '00000000' }, member(trusted)], jwk, 'sha1', handles);
    const batchKey = privateDecrypt({ key: recipient.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, sealed.encryptedBatchKey);
    assert.deepEqual(unwrap(batchKey, sealed.wrapped[0]!), keys.get(handles[0]!));
  });

  it('refusals / OAEP SHA-256 (MECHANISM_UNSUPPORTED on SoftHSM2 2.6.1), unknown key, key imported outside the mode (EXPORT_REFUSED), wrong SO PIN', () => {
    const code = (f: () => unknown, expected: string, pattern?: RegExp) =>
      assert.throws(f, (e: unknown) => {
        assert.ok(e instanceof CustodyError, String(e));
        assert.equal(e.code, expected, e.message);
        if (pattern) assert.match(e.message, pattern);
        return true;
      });
    code(() => exportSealedTrusted(softhsmModulePath(), [member(trusted)], jwk, 'sha256', [...keys.keys()]), 'MECHANISM_UNSUPPORTED', /--oaep sha1/);
    code(() => exportSealedTrusted(softhsmModulePath(), [member(trusted)], jwk, 'sha1', ['root/70B3D57ED00BFFFF/AppKey/x1']), 'KEY_NOT_FOUND');
    code(() => exportSealedTrusted(softhsmModulePath(), [member(plain)], jwk, 'sha1', [...plainKey.keys()]), 'EXPORT_REFUSED', /CKA_EXTRACTABLE=false/);
    code(() => exportSealedTrusted(softhsmModulePath(), [{ ...member(trusted), soPin: '99999999' }], jwk, 'sha1', [...keys.keys()]), 'TOKEN_UNAVAILABLE', /Security Officer PIN .* refused/);
  });
});
