import { type KeyObject, constants, generateKeyPairSync, privateDecrypt } from 'node:crypto';
import { FlattenedSign, type JWK, calculateJwkThumbprint } from 'jose';
import { aesKeyUnwrap } from '../../src/custody/primitives.js';
import { type MakerKey, type MakerKeyPair, generateMakerKey } from '../../src/provisioning/sealed-batch/index.js';

/*
 * Both ends of a sealed batch for tests, with real crypto: a Joinkeep receiving key (RSA-3072, as custody
 * makes it), makers' signing keys, and the opening of a batch as custody will do it (RSA-OAEP decrypt, RFC 3394
 * unwrap) so tests can compare what was sealed with what comes out.
 */

export interface Recipient {
  readonly privateKey: KeyObject;
  readonly publicJwk: JWK;
  readonly kid: string;
}

export async function newRecipient(bits = 3072): Promise<Recipient> {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: bits, publicExponent: 65537 });
  const jwk = publicKey.export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(jwk, 'sha256');
  return { privateKey, publicJwk: { ...jwk, alg: 'RSA-OAEP-256', use: 'enc', kid }, kid };
}

/** A registry of makers for verifySealedBatch: kid → name and public key. */
export function makerRegistry(makers: readonly { name: string; key: MakerKeyPair }[]): (kid: string) => Promise<MakerKey | undefined> {
  return async (kid) => {
    const m = makers.find((x) => x.key.kid === kid);
    return m && { name: m.name, jwk: m.key.publicJwk };
  };
}

export { generateMakerKey };

/** Decrypts the batch key with the recipient's private key (what custody's importSealed does). */
export function openBatchKey(recipient: Recipient, batchKey: { alg: 'RSA-OAEP' | 'RSA-OAEP-256'; encryptedKey: string }): Buffer {
  return privateDecrypt(
    { key: recipient.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: batchKey.alg === 'RSA-OAEP' ? 'sha1' : 'sha256' },
    Buffer.from(batchKey.encryptedKey, 'base64url'),
  );
}

export function unwrap(batchKey: Buffer, wrapped: string): Buffer {
  return aesKeyUnwrap(batchKey, Buffer.from(wrapped, 'base64url'));
}

/**
 * Signs any payload and header as a maker would, bypassing the sealer's own checks, to build batches that
 * are well signed but wrong inside.
 */
export async function signRaw(payload: unknown, signingKey: JWK, header: Record<string, unknown> = {}): Promise<Buffer> {
  const kid = await calculateJwkThumbprint(signingKey, 'sha256');
  const alg = signingKey.kty === 'OKP' ? 'EdDSA' : 'ES256';
  const jws = await new FlattenedSign(Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload)))
    .setProtectedHeader({ alg, kid, typ: 'joinkeep-sealed-batch+json', ...header })
    .sign(signingKey);
  return Buffer.from(JSON.stringify(jws));
}

/** The envelope of a batch file, to edit in tampering tests. */
export function envelopeOf(file: Buffer): { protected: string; payload: string; signature: string } {
  return JSON.parse(file.toString('utf8')) as { protected: string; payload: string; signature: string };
}

export function fileOf(envelope: object): Buffer {
  return Buffer.from(JSON.stringify(envelope));
}

/** Distinct, recognisable 16-byte keys: byte 0 = tag, the rest a counter pattern. */
export function testKey(tag: number, n: number): Buffer {
  const k = Buffer.alloc(16, tag);
  k.writeUInt32BE(n, 12);
  return k;
}
