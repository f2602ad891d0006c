import { type KeyObject, createHash, createPublicKey } from 'node:crypto';
import type { JsonWebKeyRsaPublic } from './custody.js';
import { CustodyError } from './errors.js';

/*
 * The receiving key's public half as a JWK (RFC 7517/7518), named by its RFC 7638 thumbprint: SHA-256 over the
 * required members in lexicographic order, without white space — for RSA `{"e":…,"kty":"RSA","n":…}` — in
 * base64url. Used by every custody, so that a key has the same kid whichever custody holds it.
 */

/** Receiving keys are RSA-3072 with e = 65537 (docs/specs/sealed-batch.md). */
export const RECEIVING_KEY_BITS = 3072;
export const RECEIVING_KEY_EXPONENT = 0x10001;
/** The smallest recipient modulus exportSealed accepts. */
const MIN_RECIPIENT_BITS = 2048;

/** The JWK of the RSA public key with big-endian modulus `n` and exponent `e` (leading zero bytes dropped). */
export function receivingKeyJwk(n: Uint8Array, e: Uint8Array): JsonWebKeyRsaPublic {
  const nb = b64url(stripZeros(n));
  const eb = b64url(stripZeros(e));
  return { kty: 'RSA', n: nb, e: eb, alg: 'RSA-OAEP-256', use: 'enc', kid: rsaThumbprint(nb, eb) };
}

/** The JWK of an RSA public (or private) KeyObject. */
export function receivingKeyJwkOf(key: KeyObject): JsonWebKeyRsaPublic {
  const jwk = (key.type === 'private' ? createPublicKey(key) : key).export({ format: 'jwk' });
  if (jwk.kty !== 'RSA' || typeof jwk.n !== 'string' || typeof jwk.e !== 'string') throw new CustodyError('INVALID_KEY', 'not an RSA key');
  return { kty: 'RSA', n: jwk.n, e: jwk.e, alg: 'RSA-OAEP-256', use: 'enc', kid: rsaThumbprint(jwk.n, jwk.e) };
}

/** RFC 7638 §3.2: the thumbprint of an RSA JWK, from its base64url `n` and `e`. */
export function rsaThumbprint(n: string, e: string): string {
  // JSON.stringify of these three members in this order is the canonical form (base64url needs no escaping).
  return createHash('sha256').update(JSON.stringify({ e, kty: 'RSA', n })).digest('base64url');
}

/**
 * The recipient of an export as a public KeyObject, after checking it is an RSA key of at least 2048 bits and, when
 * it names a kid, that the kid is its thumbprint (a JWK whose kid was edited names another key). INVALID_KEY otherwise.
 */
export function recipientPublicKey(recipient: JsonWebKeyRsaPublic): KeyObject {
  if (recipient === null || typeof recipient !== 'object' || recipient.kty !== 'RSA' || typeof recipient.n !== 'string' || typeof recipient.e !== 'string') {
    throw new CustodyError('INVALID_KEY', 'the recipient must be an RSA public key as a JWK (kty "RSA", n, e)');
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: { kty: 'RSA', n: recipient.n, e: recipient.e }, format: 'jwk' });
  } catch {
    throw new CustodyError('INVALID_KEY', 'the recipient JWK is not a valid RSA public key');
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RECIPIENT_BITS) throw new CustodyError('INVALID_KEY', `the recipient key has ${bits} bits; at least ${MIN_RECIPIENT_BITS} are required`);
  const { kid } = receivingKeyJwkOf(key);
  if (recipient.kid !== undefined && recipient.kid !== kid) {
    throw new CustodyError('INVALID_KEY', `the recipient JWK's kid "${String(recipient.kid)}" is not its thumbprint (${kid})`);
  }
  return key;
}

function stripZeros(bytes: Uint8Array): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  return Buffer.from(bytes.buffer, bytes.byteOffset + i, bytes.length - i);
}

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}
