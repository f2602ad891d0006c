import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { CustodyError } from '../errors.js';

/*
 * Keys at rest: AES-256-GCM under the master key, 12-byte random nonce, 16-byte tag.
 * The additional data binds each ciphertext to its handle and usage, so a record copied to another
 * row (say, a KEK swapped for a root key) fails to open.
 */

const FORMAT = 'joinkeep-sealed-key/v1';
const NONCE = 12;
const TAG = 16;

function aad(handle: string, usage: string): Buffer {
  return Buffer.from(`${FORMAT}\n${usage}\n${handle}`, 'utf8');
}

export function sealKey(masterKey: Uint8Array, handle: string, usage: string, key: Uint8Array): Buffer {
  const nonce = randomBytes(NONCE);
  const c = createCipheriv('aes-256-gcm', masterKey, nonce);
  c.setAAD(aad(handle, usage));
  const body = Buffer.concat([c.update(key), c.final()]);
  return Buffer.concat([nonce, body, c.getAuthTag()]);
}

export function openSealedKey(masterKey: Uint8Array, handle: string, usage: string, sealed: Uint8Array): Buffer {
  if (sealed.length <= NONCE + TAG) throw new CustodyError('SEALED_RECORD_CORRUPT', `sealed record for ${handle} is truncated`);
  const d = createDecipheriv('aes-256-gcm', masterKey, sealed.subarray(0, NONCE));
  d.setAAD(aad(handle, usage));
  d.setAuthTag(sealed.subarray(sealed.length - TAG));
  try {
    return Buffer.concat([d.update(sealed.subarray(NONCE, sealed.length - TAG)), d.final()]);
  } catch {
    throw new CustodyError('SEALED_RECORD_CORRUPT', `sealed record for ${handle} does not open under this master key (wrong master key, or the record was altered)`);
  }
}
