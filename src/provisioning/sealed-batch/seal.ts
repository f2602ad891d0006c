import { type KeyObject, constants, createPublicKey, createSecretKey, publicEncrypt, randomFillSync, randomUUID } from 'node:crypto';
import { FlattenedSign, type JWK, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import { aesKeyWrap } from '../../custody/primitives.js';
import { ProtocolError, eui64FromBeHex, parseMacVersion } from '../../protocol/index.js';
import { ProvisioningError } from '../errors.js';
import { checkPayload } from './format.js';
import { type BatchKind, type IdentityDevice, SEALED_BATCH_TYP, SEALED_BATCH_VERSION, type SealedBatchPayload, type SignatureAlgorithm } from './schema.js';

/*
 * The maker side of docs/specs/sealed-batch.md: a fresh AES-256 batch key per batch, RSA-OAEP-encrypted to the
 * Joinkeep installation's receiving key; every device key RFC 3394-wrapped under it; the payload signed by the
 * maker (JWS flattened JSON, ES256 or EdDSA).
 */

export type OaepHash = 'sha1' | 'sha256';
/** JOSE names (RFC 7518 §4.3): RSA-OAEP is SHA-1 + MGF1-SHA-1, RSA-OAEP-256 is SHA-256 + MGF1-SHA-256. */
export const OAEP_ALG = { sha1: 'RSA-OAEP', sha256: 'RSA-OAEP-256' } as const;
const MIN_RSA_BITS = 2048;

export interface MakerKeyPair {
  readonly alg: SignatureAlgorithm;
  /** RFC 7638 thumbprint of the public key: the `kid` of every batch this key signs. */
  readonly kid: string;
  readonly privateJwk: JWK;
  readonly publicJwk: JWK;
}

/** A maker's signing key pair (P-256 for ES256, Ed25519 for EdDSA), as JWKs carrying alg, use and kid. */
export async function generateMakerKey(alg: SignatureAlgorithm = 'ES256'): Promise<MakerKeyPair> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk, 'sha256');
  const meta = { alg, use: 'sig', kid };
  return { alg, kid, privateJwk: { ...(await exportJWK(privateKey)), ...meta }, publicJwk: { ...publicJwk, ...meta } };
}

/** The `kid` of a receiving key: its RFC 7638 SHA-256 thumbprint, base64url. */
export function receivingKeyKid(jwk: JWK): Promise<string> {
  return calculateJwkThumbprint(jwk, 'sha256');
}

export interface DeviceIdentityInput {
  readonly devEui: string;
  readonly joinEui: string;
  readonly macVersion: string;
  readonly profile?: string;
  readonly serialNumber?: string;
  readonly claimCodeHash?: string;
}

export interface DeviceKeysInput extends DeviceIdentityInput {
  readonly appKey: Uint8Array;
  /** LoRaWAN 1.1 devices only. */
  readonly nwkKey?: Uint8Array;
}

export type SealContent =
  | { readonly kind: 'device-keys'; readonly devices: readonly DeviceKeysInput[] }
  | { readonly kind: 'derived'; readonly derivedFrom: string; readonly devices: readonly DeviceIdentityInput[] }
  | { readonly kind: 'derivation-master'; readonly masterKeyId: string; readonly masterKey: Uint8Array };

export interface SealOptions {
  /** The Joinkeep installation's receiving key, public RSA JWK. */
  readonly recipientJwk: JWK;
  /** The maker's private signing JWK (EC P-256 or OKP Ed25519). */
  readonly signingKey: JWK;
  readonly maker: string;
  readonly content: SealContent;
  /** Default sha256; choose sha1 for a recipient whose HSM unwraps only RSA-OAEP with SHA-1 (SoftHSM2 2.6.1). */
  readonly oaep?: OaepHash;
  readonly batchId?: string;
  readonly createdAt?: Date;
}

/** Seals a batch and returns the file's bytes (JWS flattened JSON). */
export async function sealBatch(o: SealOptions): Promise<Buffer> {
  const recipient = await recipientKey(o.recipientJwk);
  const batchId = o.batchId ?? randomUUID();
  const createdAt = (o.createdAt ?? new Date()).toISOString();
  // The fields every kind shares, in the order the spec lists them.
  const head = <K extends BatchKind>(kind: K) => ({ version: SEALED_BATCH_VERSION as typeof SEALED_BATCH_VERSION, batchId, kind, maker: o.maker, createdAt, recipient: { kid: recipient.kid } });
  const c = o.content;
  if (c.kind === 'derived') {
    const devices = c.devices.map(identityOf);
    return signSealedBatch({ ...head('derived'), derivedFrom: c.derivedFrom, deviceCount: devices.length, devices }, o.signingKey);
  }
  // The recipient's JWK says which hash its custody unwraps ("RSA-OAEP" = SHA-1, e.g. SoftHSM2 2.6.1).
  const oaep = o.oaep ?? (o.recipientJwk.alg === 'RSA-OAEP' ? 'sha1' : 'sha256');
  const { encryptedKey, kek } = newBatchKey(recipient.key, oaep);
  const batchKey = { alg: OAEP_ALG[oaep], encryptedKey: encryptedKey.toString('base64url') };
  const wrap = (key: Uint8Array, what: string): string => {
    if (key.length !== 16) throw new ProvisioningError('INVALID_INPUT', `${what} must be 16 bytes, got ${key.length}`);
    return aesKeyWrap(kek, key).toString('base64url');
  };
  if (c.kind === 'derivation-master') {
    const derivationMaster = { id: c.masterKeyId, wrappedKey: wrap(c.masterKey, 'the derivation master key') };
    return signSealedBatch({ ...head('derivation-master'), batchKey, derivationMaster, deviceCount: 0, devices: [] }, o.signingKey);
  }
  const devices = c.devices.map((d) => {
    const identity = identityOf(d);
    return {
      ...identity,
      appKey: wrap(d.appKey, `AppKey of ${identity.devEui}`),
      ...(d.nwkKey === undefined ? {} : { nwkKey: wrap(d.nwkKey, `NwkKey of ${identity.devEui}`) }),
    };
  });
  const keyed: SealedBatchPayload = { ...head('device-keys'), batchKey, deviceCount: devices.length, devices };
  return signSealedBatch(keyed, o.signingKey);
}

/**
 * Checks a payload against the v1 rules and signs it with the maker's private JWK. Used by sealBatch, and for
 * Join-Server-to-Join-Server transfers whose keys custody has already wrapped.
 */
export async function signSealedBatch(payload: SealedBatchPayload, signingKey: JWK): Promise<Buffer> {
  try {
    checkPayload(payload);
  } catch (error) {
    if (error instanceof ProvisioningError) throw new ProvisioningError('INVALID_INPUT', `the batch would be invalid: ${error.message}`);
    throw error;
  }
  const alg = signatureAlgorithmOf(signingKey);
  const kid = await calculateJwkThumbprint(signingKey, 'sha256');
  const jws = await new FlattenedSign(Buffer.from(JSON.stringify(payload), 'utf8')).setProtectedHeader({ alg, kid, typ: SEALED_BATCH_TYP }).sign(signingKey);
  return Buffer.from(`${JSON.stringify({ protected: jws.protected, payload: jws.payload, signature: jws.signature })}\n`, 'utf8');
}

/** ES256 for a P-256 key, EdDSA for an Ed25519 key; anything else is refused. */
export function signatureAlgorithmOf(jwk: JWK): SignatureAlgorithm {
  if (typeof jwk.d !== 'string') throw new ProvisioningError('INVALID_INPUT', 'the signing key must be a private JWK (it has no "d")');
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return 'ES256';
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return 'EdDSA';
  throw new ProvisioningError('INVALID_INPUT', `the signing key must be EC P-256 (ES256) or OKP Ed25519 (EdDSA), not ${jwk.kty} ${jwk.crv ?? ''}`.trim());
}

/** A fresh 32-byte batch key: encrypted to the recipient, and kept only as a KeyObject for wrapping. */
function newBatchKey(recipient: KeyObject, oaep: OaepHash): { encryptedKey: Buffer; kek: KeyObject } {
  // Not randomBytes(): small Buffers may share a pool slab; this one we own and can zero.
  const raw = randomFillSync(Buffer.alloc(32));
  try {
    const encryptedKey = publicEncrypt({ key: recipient, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: oaep }, raw);
    return { encryptedKey, kek: createSecretKey(raw) };
  } finally {
    raw.fill(0);
  }
}

async function recipientKey(jwk: JWK): Promise<{ key: KeyObject; kid: string }> {
  if (jwk.kty !== 'RSA' || typeof jwk.n !== 'string' || typeof jwk.e !== 'string') throw new ProvisioningError('INVALID_INPUT', 'the recipient must be an RSA public JWK (the receiving key Joinkeep publishes)');
  if (jwk.d !== undefined) throw new ProvisioningError('INVALID_INPUT', 'the recipient JWK holds a private key: give the public receiving key Joinkeep publishes');
  if (jwk.use !== undefined && jwk.use !== 'enc') throw new ProvisioningError('INVALID_INPUT', `the recipient JWK is for "${jwk.use}", not encryption`);
  let key: KeyObject;
  try {
    key = createPublicKey({ key: { kty: jwk.kty, n: jwk.n, e: jwk.e }, format: 'jwk' });
  } catch (error) {
    throw new ProvisioningError('INVALID_INPUT', `the recipient JWK is not a usable RSA key: ${(error as Error).message}`);
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RSA_BITS) throw new ProvisioningError('INVALID_INPUT', `the recipient key has ${bits} bits; at least ${MIN_RSA_BITS} are required`);
  const kid = await receivingKeyKid(jwk);
  // A kid that is not the thumbprint means the file was edited or is not a Joinkeep receiving key.
  if (jwk.kid !== undefined && jwk.kid !== kid) throw new ProvisioningError('INVALID_INPUT', `the recipient JWK's kid ${jwk.kid} is not its thumbprint ${kid}`);
  return { key, kid };
}

function identityOf(d: DeviceIdentityInput): IdentityDevice {
  try {
    return {
      devEui: eui64FromBeHex(d.devEui, 'devEui'),
      joinEui: eui64FromBeHex(d.joinEui, 'joinEui'),
      macVersion: parseMacVersion(d.macVersion, 'macVersion'),
      ...(d.profile === undefined ? {} : { profile: d.profile }),
      ...(d.serialNumber === undefined ? {} : { serialNumber: d.serialNumber }),
      ...(d.claimCodeHash === undefined ? {} : { claimCodeHash: d.claimCodeHash }),
    };
  } catch (error) {
    if (error instanceof ProtocolError) throw new ProvisioningError('INVALID_INPUT', `device ${String(d.devEui)}: ${error.message}`);
    throw error;
  }
}
