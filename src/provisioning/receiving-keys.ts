import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import type { KeyCustody, ReceivingKeyInfo } from '../custody/custody.js';
import { CustodyError } from '../custody/errors.js';

/*
 * The receiving keys as published to makers. The JWK's `alg` tells the sealing tool which RSA-OAEP hash this
 * installation can unwrap: RSA-OAEP-256 where custody can, RSA-OAEP (SHA-1) where it cannot — SoftHSM2 2.6.1, for
 * one, unwraps only SHA-1 OAEP (spec-notes §9.1). Found by asking custody to open an empty batch whose random batch
 * key is sealed with SHA-256: nothing is imported either way.
 */

const probed = new WeakMap<KeyCustody, Map<string, 'RSA-OAEP-256' | 'RSA-OAEP'>>();

export async function publishedReceivingKeys(custody: KeyCustody): Promise<ReceivingKeyInfo[]> {
  const keys = await custody.listReceivingKeys();
  const out: ReceivingKeyInfo[] = [];
  for (const key of keys) out.push({ ...key, jwk: { ...key.jwk, alg: await oaepAlgorithm(custody, key) } });
  return out;
}

/** The newest receiving key, as published; undefined when there is none. */
export async function currentReceivingKey(custody: KeyCustody): Promise<ReceivingKeyInfo | undefined> {
  return (await publishedReceivingKeys(custody)).sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime())[0];
}

async function oaepAlgorithm(custody: KeyCustody, key: ReceivingKeyInfo): Promise<'RSA-OAEP-256' | 'RSA-OAEP'> {
  const cache = probed.get(custody) ?? new Map<string, 'RSA-OAEP-256' | 'RSA-OAEP'>();
  probed.set(custody, cache);
  const known = cache.get(key.kid);
  if (known !== undefined) return known;
  const publicKey = createPublicKey({ key: { kty: 'RSA', n: key.jwk.n, e: key.jwk.e }, format: 'jwk' });
  const encrypted = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, randomBytes(32));
  let alg: 'RSA-OAEP-256' | 'RSA-OAEP' = 'RSA-OAEP-256';
  try {
    await custody.importSealed({ receivingKid: key.kid, batchKey: { oaep: 'sha256', encrypted }, keys: [] });
  } catch (error) {
    if (!(error instanceof CustodyError) || error.code !== 'MECHANISM_UNSUPPORTED') throw error;
    alg = 'RSA-OAEP';
  }
  cache.set(key.kid, alg);
  return alg;
}
