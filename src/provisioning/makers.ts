import { type JWK, calculateJwkThumbprint, importJWK } from 'jose';
import type { AuditSink } from '../observability/audit.js';
import type { MakerRecord, Storage } from '../storage/storage.js';
import { ProvisioningError } from './errors.js';

/*
 * The makers whose signed batches this Join Server accepts: device makers, secure-element vendors, and other Join
 * Servers handing devices over. A maker is its name and its public signing key (EC P-256 for ES256, or Ed25519 for
 * EdDSA); the key's RFC 7638 thumbprint is the `kid` its batches carry.
 */

export interface AddMakerInput {
  readonly name: string;
  readonly kind: MakerRecord['kind'];
  /** The public signing key as a JWK (JSON text or object). */
  readonly publicJwk: unknown;
}

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const KINDS: readonly MakerRecord['kind'][] = ['device-maker', 'se-vendor', 'join-server'];

export async function addMaker(deps: { storage: Storage; audit: AuditSink; actor: string; now?: () => Date }, input: AddMakerInput): Promise<MakerRecord> {
  if (!NAME.test(input.name)) throw new ProvisioningError('INVALID_INPUT', `maker name "${input.name}" must be 1–64 characters of a–z, 0–9, ".", "_" or "-", starting with a letter or digit`);
  if (!KINDS.includes(input.kind)) throw new ProvisioningError('INVALID_INPUT', `maker kind must be one of ${KINDS.join(', ')}`);
  const jwk = await publicSigningJwk(input.publicJwk);
  const maker: MakerRecord = { name: input.name, kind: input.kind, keyId: await calculateJwkThumbprint(jwk, 'sha256'), publicJwk: jwk, createdAt: (deps.now ?? (() => new Date()))() };
  await deps.storage.insertMaker(maker);
  await deps.audit.appendAudit({ at: maker.createdAt, actor: deps.actor, action: 'maker.add', subject: `maker/${maker.name}`, outcome: 'success', details: { kind: maker.kind, keyId: maker.keyId } });
  return maker;
}

/** Only the public members of an EC P-256 or Ed25519 key; a private key given by mistake is refused, not trimmed. */
async function publicSigningJwk(value: unknown): Promise<JWK> {
  let parsed: unknown = value;
  if (typeof value === 'string') {
    try {
      parsed = JSON.parse(value);
    } catch {
      throw new ProvisioningError('INVALID_INPUT', 'the maker\'s public key must be a JWK (JSON)');
    }
  }
  if (typeof parsed !== 'object' || parsed === null) throw new ProvisioningError('INVALID_INPUT', 'the maker\'s public key must be a JWK object');
  const k = parsed as Record<string, unknown>;
  if ('d' in k) throw new ProvisioningError('INVALID_INPUT', 'this JWK contains a private key ("d"): register only the public key, and keep the private key at the maker');
  let jwk: JWK;
  if (k['kty'] === 'EC' && k['crv'] === 'P-256' && typeof k['x'] === 'string' && typeof k['y'] === 'string') jwk = { kty: 'EC', crv: 'P-256', x: k['x'], y: k['y'] };
  else if (k['kty'] === 'OKP' && k['crv'] === 'Ed25519' && typeof k['x'] === 'string') jwk = { kty: 'OKP', crv: 'Ed25519', x: k['x'] };
  else throw new ProvisioningError('INVALID_INPUT', 'the maker\'s signing key must be an EC P-256 (ES256) or Ed25519 (EdDSA) public JWK');
  try {
    await importJWK(jwk, jwk.kty === 'EC' ? 'ES256' : 'EdDSA');
  } catch (error) {
    throw new ProvisioningError('INVALID_INPUT', `the maker's public key is not a valid ${jwk.crv} key: ${(error as Error).message}`);
  }
  return jwk;
}
