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

export type KeyUsage = 'root' | 'kek';

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
