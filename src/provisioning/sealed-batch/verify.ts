import { type JWK, flattenedVerify } from 'jose';
import { ProvisioningError } from '../errors.js';
import { type ParseOptions, parseEnvelope, parsePayload } from './format.js';
import type { ProtectedHeader, SealedBatchPayload } from './schema.js';

/*
 * Checking who made a batch: the protected header's kid names a maker key registered in Joinkeep; the signature
 * must verify under that key, with the algorithm the header names, from the allow-list only; and the payload's
 * `maker` must be the name that key is registered under (so one maker cannot pass a batch off as another's).
 * The payload is decoded and checked only after its signature verifies.
 */

export interface MakerKey {
  /** The maker identity's registered name; must equal payload.maker. */
  readonly name: string;
  /** The maker's public signing key. */
  readonly jwk: JWK;
}

/** Looks a maker key up by its kid (RFC 7638 thumbprint); undefined when no maker has that key. */
export type ResolveMakerKey = (kid: string) => Promise<MakerKey | undefined>;

export interface VerifiedSealedBatch {
  readonly header: ProtectedHeader;
  readonly payload: SealedBatchPayload;
  /** The maker's registered name (equal to payload.maker). */
  readonly maker: string;
}

export async function verifySealedBatch(bytes: Uint8Array, resolveMakerKey: ResolveMakerKey, options: ParseOptions = {}): Promise<VerifiedSealedBatch> {
  const { envelope, header } = parseEnvelope(bytes, options);
  const maker = await resolveMakerKey(header.kid);
  if (maker === undefined) throw new ProvisioningError('MAKER_UNKNOWN', `the batch is signed by key ${header.kid}, which is not registered for any maker`);
  let signed: Uint8Array;
  try {
    // Only the header's alg, and only if allowed: no algorithm confusion, no "none", no HMAC with a public key.
    ({ payload: signed } = await flattenedVerify(envelope, maker.jwk, { algorithms: [header.alg] }));
  } catch (error) {
    throw new ProvisioningError('BATCH_SIGNATURE_INVALID', `the batch signature does not verify with the ${header.alg} key ${header.kid} of maker "${maker.name}" (altered after signing, or signed with another key): ${(error as Error).message}`);
  }
  const payload = parsePayload(signed);
  if (payload.maker !== maker.name) {
    throw new ProvisioningError('MAKER_MISMATCH', `the batch says it is from "${payload.maker}" but is signed with a key of maker "${maker.name}"`);
  }
  return { header, payload, maker: maker.name };
}
