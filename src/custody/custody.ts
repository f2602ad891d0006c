/**
 * Key custody speaks in operations on key handles (STYLE rule 3): callers pass handles and blocks built by
 * src/protocol and get back MIC verdicts, ciphertexts and wrapped keys. No operation returns a root key or KEK,
 * and session keys leave only wrapped under a named KEK, or in clear where the caller passes an explicit
 * clear-export authorisation (an operator's per-peer decision).
 *
 * The software keystore and the PKCS#11 backend implement this same interface and pass the same contract tests.
 */

/** Names a key held in custody, e.g. `root/0004A30B001C0530/AppKey/5f2c01ab` or `kek/ns-000013`. */
export type KeyHandle = string;

/**
 * The key an operation runs with: a key held in custody, or a key derived from one by a single AES-128-ECB
 * encryption of `derive` (how every LoRaWAN lifetime and session key is made, e.g. JSIntKey = aes(NwkKey, 06|DevEUI|pad)).
 * `derive` names only lifetime keys (JSIntKey, JSEncKey: one fixed block per root key), never session keys, so a
 * custody may keep the derived key for later uses (PKCS#11 keeps it as a token object, deleted with its root).
 */
export interface KeyRef {
  readonly handle: KeyHandle;
  readonly derive?: Uint8Array | undefined;
}

/** Where a derived session key goes: wrapped (RFC 3394) under a KEK, or in clear under an explicit authorisation. */
export type KeyDestination =
  | { readonly kekLabel: string }
  | { readonly clear: ClearExportAuthorisation };

/** Proof that an operator allowed clear session keys for one peer. Custody refuses clear export without it. */
export interface ClearExportAuthorisation {
  readonly peer: string;
  readonly allowedBy: 'operator-peer-setting';
}

export interface ExportedKey {
  /** null: the key is in clear (KeyEnvelope with empty KEKLabel). */
  readonly kekLabel: string | null;
  /** RFC 3394 wrap (24 bytes for an AES-128 key), or the 16 clear bytes. */
  readonly key: Buffer;
}

/** One session key to derive from a root key and export (see deriveAndExport). */
export interface SessionKeyRequest {
  readonly root: KeyHandle;
  readonly block: Uint8Array;
  readonly to: KeyDestination;
}

/** A Join-accept to seal: MIC over `micInput`, then AES *decrypt* of the body after MHDR followed by the MIC. */
export interface JoinAcceptSeal {
  readonly micKey: KeyRef;
  /** Built by src/protocol: the body (1.0.x) or JoinReqType|JoinEUI|DevNonce|body (1.1, OptNeg=1). */
  readonly micInput: Uint8Array;
  readonly encryptionKey: KeyRef;
  /** MHDR … RxDelay, and the CFList if any: 13 or 29 bytes. */
  readonly body: Uint8Array;
}

export interface CompletedJoin {
  /** The encrypted part of the Join-accept (16 or 32 bytes: everything after MHDR, MIC included). */
  readonly encrypted: Buffer;
  /** One exported key per request, in order. */
  readonly keys: ExportedKey[];
}

/**
 * root: a device's AppKey or NwkKey. kek: wraps and unwraps keys exchanged with a peer. receiving: the private half
 * of the installation's RSA key pair that sealed batches are encrypted to (receivingKeyHandle). derivation: a
 * vendor's derivation master key, from which device root keys are derived inside custody (importDerived).
 */
export type KeyUsage = 'root' | 'kek' | 'receiving' | 'derivation';

export interface KeyInfo {
  readonly handle: KeyHandle;
  readonly usage: KeyUsage;
  readonly createdAt: Date;
  /** Where the key is kept, e.g. `software keystore` or `PKCS#11 token "joinkeep-a"`. */
  readonly location?: string;
  /** Protection attributes as the custody reports them (PKCS#11: CKA_SENSITIVE, CKA_EXTRACTABLE, …); never values. */
  readonly attributes?: Readonly<Record<string, boolean>>;
}

export interface KeyCustody {
  readonly kind: 'software' | 'pkcs11';

  /** AES-CMAC (RFC 4493) of `message`, compared in constant time with the 4-byte `mic`. */
  verifyMic(key: KeyRef, message: Uint8Array, mic: Uint8Array): Promise<boolean>;

  /** The 4-byte LoRaWAN MIC: first 4 bytes of AES-CMAC(key, message). */
  computeMic(key: KeyRef, message: Uint8Array): Promise<Buffer>;

  /**
   * Join-accept "encryption": AES-128-ECB *decrypt* of 16 or 32 bytes (LoRaWAN 1.1 §6.2.3),
   * so that the device needs only AES encrypt.
   */
  encryptJoinAccept(key: KeyRef, plaintext: Uint8Array): Promise<Buffer>;

  /**
   * Derives one key per request (AES-128-ECB encrypt of `block` under `root`) and exports it to its destination.
   * Nothing is stored; the derived keys exist only inside custody for the duration of the call.
   */
  deriveAndExport(root: KeyHandle, requests: readonly { readonly block: Uint8Array; readonly to: KeyDestination }[]): Promise<ExportedKey[]>;

  /**
   * The custody work of an accepted Join- or Rejoin-request in one call: the accept's MIC (computeMic), its
   * encryption (encryptJoinAccept of body[1..] ‖ MIC), then every session key (deriveAndExport). Same results and
   * refusals as those calls in that order, except that every key, KEK and clear-export authorisation is checked
   * before any work is done. One call instead of four: with PKCS#11, one worker round trip per join instead of four.
   */
  completeJoin(accept: JoinAcceptSeal, keys: readonly SessionKeyRequest[]): Promise<CompletedJoin>;

  /** Imports a key that arrives wrapped (RFC 3394) under a KEK already in custody. */
  importWrapped(handle: KeyHandle, usage: KeyUsage, wrapped: Uint8Array, unwrapWithKekLabel: string): Promise<void>;

  /**
   * Imports a KEK agreed out of band with a peer, from the operator's own file: the one secret that enters
   * in clear, as in every Join Server (DESIGN "Decisions").
   */
  importKek(label: string, key: Uint8Array): Promise<void>;

  hasKey(handle: KeyHandle): Promise<boolean>;
  hasKek(label: string): Promise<boolean>;
  listKeys(): Promise<KeyInfo[]>;
  deleteKey(handle: KeyHandle): Promise<void>;

  /**
   * Creates a receiving key (RSA-3072, e = 65537) in custody and returns its public JWK; the private key never
   * leaves custody. Handle `receivingKeyHandle(kid)`, usage 'receiving'.
   */
  createReceivingKey(): Promise<ReceivingKeyInfo>;
  /** Every receiving key in custody, oldest first. */
  listReceivingKeys(): Promise<ReceivingKeyInfo[]>;
  /**
   * Imports keys sealed to a receiving key (docs/specs/sealed-batch.md): the batch key is RSA-OAEP-decrypted with
   * the receiving key `receivingKid`, then every key is RFC 3394-unwrapped under it, straight into custody.
   * All-or-nothing: either every key is in custody afterwards, or none is (the ones created are removed again).
   * Refusals: KEY_NOT_FOUND (no such receiving key), MECHANISM_UNSUPPORTED (the custody cannot unwrap with this
   * OAEP hash), KEY_EXISTS (a handle is taken, or named twice), UNWRAP_FAILED (the batch key or a key does not
   * open), INVALID_KEY (a key of the wrong size). When an input has several faults, which one is reported may differ
   * between custodies; in every case nothing is imported.
   */
  importSealed(input: SealedImport): Promise<void>;
  /**
   * Derives device root keys inside custody from a derivation master key (JK-KDF-1: one AES-128 encryption of each
   * block under the master) and keeps them as root keys. Same all-or-nothing rule as importSealed. Refusals:
   * KEY_NOT_FOUND (no such derivation key), INVALID_KEY (a block is not 16 bytes), KEY_EXISTS.
   */
  importDerived(input: DerivedImport): Promise<void>;
  /**
   * Root keys wrapped for another Join Server: a fresh batch key, RSA-OAEP-encrypted to `recipient`, and each key
   * RFC 3394-wrapped under it (`wrapped[i]` for `handles[i]`). Refusals: INVALID_KEY (the recipient is not an RSA
   * public key of at least 2048 bits, or its kid is not its thumbprint), KEY_NOT_FOUND, EXPORT_REFUSED (the custody
   * does not let root keys leave, e.g. an HSM whose root keys are not extractable).
   */
  exportSealed(recipient: JsonWebKeyRsaPublic, oaep: OaepHash, handles: readonly KeyHandle[]): Promise<{ encryptedBatchKey: Buffer; wrapped: Buffer[] }>;
  /** deleteKey of every handle, in bulk; handles not held are ignored. */
  deleteKeys(handles: readonly KeyHandle[]): Promise<void>;

  /** Checks that custody can serve now (an HSM answers); throws a CustodyError when it cannot. Uses no key. */
  probe?(): Promise<void>;
  /** The members of a replicated custody (an HSM pool) and their state, for metrics, /healthz and the CLI. */
  status?(): CustodyStatus;

  close(): Promise<void>;

  /** What the custody asked of its HSM so far (PKCS#11 calls and key objects), for metrics; absent in software. */
  hsmCounters?(): HsmCounters;
}

/** Running totals of a PKCS#11 custody's work on its token(s); they only grow. */
export interface HsmCounters {
  /** PKCS#11 calls by function name (C_Sign, C_DeriveKey, …). */
  readonly calls: Readonly<Record<string, number>>;
  /** Key objects created as session objects (derived keys, used and destroyed within one operation). */
  readonly sessionObjectsCreated: number;
  /** Key objects created on the token (imported keys, kept lifetime keys). */
  readonly tokenObjectsCreated: number;
  readonly objectsDestroyed: number;
}

export type CustodyMemberState = 'up' | 'down' | 'inconsistent';

export interface CustodyMemberStatus {
  /** The member's name: its token label. */
  readonly name: string;
  /** up: serves operations; down: failed, being reopened; inconsistent: answers but lacks keys the others hold. */
  readonly state: CustodyMemberState;
  readonly since: Date;
  /** Operations this member answered, and those that failed on it (each retried on another member). */
  readonly operations: number;
  readonly failures: number;
  /** Times the member returned to service after being down. */
  readonly readmissions: number;
  /** Why the member last left service; names handles and CKR_ codes, never key material. */
  readonly lastError?: string | undefined;
}

export interface CustodyStatus {
  readonly members: readonly CustodyMemberStatus[];
}

/** RSA-OAEP's hash (and MGF1's): 'sha1' is JOSE "RSA-OAEP", 'sha256' is "RSA-OAEP-256". No OAEP label. */
export type OaepHash = 'sha1' | 'sha256';

/** An RSA public key as a JWK (RFC 7517/7518); `kid` is its RFC 7638 thumbprint (SHA-256, base64url). */
export interface JsonWebKeyRsaPublic {
  readonly kty: 'RSA';
  /** Modulus, big-endian, base64url without padding. */
  readonly n: string;
  /** Public exponent, big-endian, base64url without padding. */
  readonly e: string;
  /** What makers should seal the batch key with; see provisioning/receiving-keys.ts (an HSM may unwrap SHA-1 only). */
  readonly alg: 'RSA-OAEP-256' | 'RSA-OAEP';
  readonly use: 'enc';
  readonly kid: string;
}

export interface ReceivingKeyInfo {
  readonly kid: string;
  readonly jwk: JsonWebKeyRsaPublic;
  readonly createdAt: Date;
}

/** Keys sealed to a receiving key (KeyCustody.importSealed). */
export interface SealedImport {
  readonly receivingKid: string;
  /** The batch key (32 bytes, AES-256) RSA-OAEP-encrypted to the receiving key. */
  readonly batchKey: { readonly oaep: OaepHash; readonly encrypted: Uint8Array };
  /** Each key RFC 3394-wrapped under the batch key; usage 'root' (device root keys) or 'derivation' (a master). */
  readonly keys: readonly { readonly handle: KeyHandle; readonly usage: 'root' | 'derivation'; readonly wrapped: Uint8Array }[];
}

/** Root keys to derive from a derivation master key (KeyCustody.importDerived). */
export interface DerivedImport {
  /** A 'derivation' key already in custody. */
  readonly master: KeyHandle;
  /** JK-KDF-1 input blocks (16 bytes each); the derived keys are kept as root keys under `handle`. */
  readonly keys: readonly { readonly handle: KeyHandle; readonly block: Uint8Array }[];
}

export function kekHandle(label: string): KeyHandle {
  return `kek/${label}`;
}

/**
 * Root-key handles carry a per-import suffix, so a handle never names two different keys over time
 * (a device deleted and provisioned again gets new handles; no cache can serve the old key).
 */
export function rootKeyHandle(devEui: string, name: 'AppKey' | 'NwkKey', importId: string): KeyHandle {
  return `root/${devEui}/${name}/${importId}`;
}

/** The receiving key whose public JWK has thumbprint `kid`. */
export function receivingKeyHandle(kid: string): KeyHandle {
  return `receiving/${kid}`;
}

/** A vendor's derivation master key, by the id its sealed batch gives it. */
export function derivationKeyHandle(masterKeyId: string): KeyHandle {
  return `derivation/${masterKeyId}`;
}
