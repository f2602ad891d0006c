import { createHash, randomBytes } from 'node:crypto';
import { endianness } from 'node:os';
import type { Template } from 'pkcs11js';
import { type KeyHandle, type KeyInfo, type KeyUsage, type OaepHash, type ReceivingKeyInfo, receivingKeyHandle } from '../custody.js';
import { CustodyError } from '../errors.js';
import { RECEIVING_KEY_BITS, receivingKeyJwk } from '../receiving-key.js';
import { type CountedPkcs11, countedPkcs11, newCounterArray } from './counters.js';
import { type LoadedModule, type ObjectHandle, acquireLogin, ckrName, pkcs11Lib, releaseLogin } from './module.js';
import { TokenLock } from './token-lock.js';
import { searchUntilSettled, settleDuplicates } from './transient-objects.js';

/*
 * The primitive operations on one token, synchronous, in one PKCS#11 session. Everything that touches a root key
 * or a KEK runs inside the token: this module only names objects, passes blocks and reads back MICs, ciphertexts
 * and wrapped keys. It has no async code and no reference to the custody class: each worker thread of the pool
 * (worker.ts) hosts one, with its own session, and the main thread holds one for the login.
 *
 * Objects on the token (all CKO_SECRET_KEY, CKK_AES, CKA_TOKEN=true, CKA_PRIVATE=true, CKA_SENSITIVE=true,
 * CKA_EXTRACTABLE=false — except root keys in trusted-KEK mode: CKA_EXTRACTABLE=true with CKA_WRAP_WITH_TRUSTED=true,
 * wrappable only under a key the Security Officer made trusted, for `transfer export`, trusted-export.ts):
 *   CKA_LABEL = the Joinkeep handle (`root/…`, `kek/<label>`);
 *   CKA_ID    = SHA-256(handle)[0..16) ‖ creation time (ms since 1970, 8 bytes big-endian).
 *   CKA_START_DATE = creation day (for HSM tooling; pkcs11js 2.1.7 cannot read it back from SoftHSM 2.6.1,
 *                    CKR_GENERAL_ERROR, measured — hence the time in CKA_ID).
 * Usage is the attribute set, checked on every use (a key is root or KEK by what it can do, never by its name):
 *   root:       SIGN (CMAC), ENCRYPT, DECRYPT (Join-accept), DERIVE; no VERIFY, WRAP, UNWRAP;
 *   kek:        WRAP, UNWRAP; no SIGN, VERIFY, ENCRYPT, DECRYPT, DERIVE;
 *   derivation: DERIVE only (a vendor's master key: device root keys are derived from it, importDerived).
 * The receiving key is an RSA key pair (CKK_RSA): the private key (CKO_PRIVATE_KEY) sensitive, non-extractable,
 * UNWRAP only (no DECRYPT, SIGN), and its public key as a public token object, both labelled `receiving/<kid>`.
 * Every usage flag is written explicitly: SoftHSM 2.6.1 defaults SIGN/VERIFY/ENCRYPT/DECRYPT/WRAP/UNWRAP to true.
 *
 * Working copies. Operations do not run on the token objects themselves but on session-object copies of them
 * (C_CopyObject with CKA_TOKEN=false), made on first use and kept by this session: on SoftHSM2 2.6.1 an operation
 * on a token object costs 2–3× the same operation on a session object (each use re-checks the object's file;
 * measured: CMAC 42 vs 14 µs, derive+destroy 125–150 vs 64 µs). A copy keeps every protection attribute (a copy
 * cannot turn CKA_SENSITIVE off or CKA_EXTRACTABLE on: CKR_ATTRIBUTE_READ_ONLY, measured) and the usage flags, and
 * dies with the session. Lifetime keys (a KeyRef with `derive`: JSIntKey, JSEncKey) are derived once from the
 * root's copy into a session object kept next to it, instead of being derived and destroyed on every use.
 * A copy is made again from its token object after COPY_TTL_MS (configurable), so a key deleted by another process
 * stops working here within that time (deleteKey through this process drops the copies at once). At most MAX_COPIES
 * keys have copies, least recently used dropped first. A key the token will not copy (e.g. CKA_COPYABLE=false) is
 * used directly, as before.
 */

const ZERO_IV = Buffer.alloc(16);
const ID_HASH_BYTES = 16;
const LE = endianness() === 'LE';

type UsageFlags = Readonly<Record<'SIGN' | 'VERIFY' | 'ENCRYPT' | 'DECRYPT' | 'DERIVE' | 'WRAP' | 'UNWRAP', boolean>>;

const ROOT_FLAGS: UsageFlags = { SIGN: true, VERIFY: false, ENCRYPT: true, DECRYPT: true, DERIVE: true, WRAP: false, UNWRAP: false };
const KEK_FLAGS: UsageFlags = { SIGN: false, VERIFY: false, ENCRYPT: false, DECRYPT: false, DERIVE: false, WRAP: true, UNWRAP: true };
/** A derived key used inside the token for one CMAC or one Join-accept decryption. */
const USE_FLAGS: UsageFlags = { SIGN: true, VERIFY: false, ENCRYPT: false, DECRYPT: true, DERIVE: false, WRAP: false, UNWRAP: false };
/** A derived key that only leaves: wrapped under a KEK, or read in clear. */
const EXPORT_FLAGS: UsageFlags = { SIGN: false, VERIFY: false, ENCRYPT: false, DECRYPT: false, DERIVE: false, WRAP: false, UNWRAP: false };
const DERIVATION_FLAGS: UsageFlags = { SIGN: false, VERIFY: false, ENCRYPT: false, DECRYPT: false, DERIVE: true, WRAP: false, UNWRAP: false };
/** The batch key of a sealed import, or a pool's transport key on the tokens that receive a copy: unwraps only. */
const UNWRAP_ONLY_FLAGS: UsageFlags = { SIGN: false, VERIFY: false, ENCRYPT: false, DECRYPT: false, DERIVE: false, WRAP: false, UNWRAP: true };
const FLAG_NAMES = Object.keys(ROOT_FLAGS) as (keyof UsageFlags)[];

/** pkcs11js has no constant for CKZ_DATA_SPECIFIED, the only OAEP label source (spec-notes §9.1). */
const CKZ_DATA_SPECIFIED = 1;
/** What a token answers to OAEP parameters it does not support (SoftHSM2 2.6.1 with SHA-256: CKR_ARGUMENTS_BAD, measured). */
const OAEP_UNSUPPORTED = new Set(['CKR_ARGUMENTS_BAD', 'CKR_MECHANISM_PARAM_INVALID', 'CKR_MECHANISM_INVALID']);
/** Label of a key pair between C_GenerateKeyPair and the relabelling by its thumbprint. */
const RECEIVING_PENDING_PREFIX = 'receiving-pending/';

/** A working copy older than this is made again from its token object (which must still exist). */
const COPY_TTL_MS = 60_000;
/** Keys with working copies per session, at most (each with its lifetime keys); least recently used dropped first. */
const MAX_COPIES = 4096;

/** Errors that mean a cached object handle no longer names an object (deleted, or the session was replaced). */
const STALE_HANDLE = new Set(['CKR_OBJECT_HANDLE_INVALID', 'CKR_KEY_HANDLE_INVALID', 'CKR_WRAPPING_KEY_HANDLE_INVALID', 'CKR_UNWRAPPING_KEY_HANDLE_INVALID']);

/** C_UnwrapKey failures that concern the token, not the envelope or the KEK. */
const TOKEN_FAILURE = /^CKR_(SESSION_|DEVICE_|TOKEN_|USER_NOT_LOGGED_IN|CRYPTOKI_NOT_INITIALIZED|HOST_MEMORY|FUNCTION_FAILED|OPERATION_ACTIVE)/;

interface TokenKey {
  readonly object: ObjectHandle;
  readonly usage: KeyUsage;
}

/** A session-object copy of a token key, and the lifetime keys derived from it (by block, hex). */
interface WorkingCopy {
  readonly object: ObjectHandle;
  readonly madeAt: number;
  readonly lifetime: Map<string, ObjectHandle>;
}

export interface TokenSessionOptions {
  /** Run operations on session-object copies of token keys and keep lifetime keys (default true; see above). */
  readonly workingCopies?: boolean | undefined;
  /** Age after which a working copy is made again from its token object (default COPY_TTL_MS). */
  readonly workingCopyTtlMs?: number | undefined;
  /**
   * Trusted-KEK mode: session keys that leave wrapped are derived with CKA_WRAP_WITH_TRUSTED=true, so the token
   * wraps them only under a KEK with CKA_TRUSTED=true (one the Security Officer created: trusted-kek.ts).
   */
  readonly wrapWithTrusted?: boolean | undefined;
  /** The pool's lock on the token's objects (token-lock.ts); absent: this session is the process's only user. */
  readonly objectLock?: SharedArrayBuffer | undefined;
}

export interface TokenIdentity {
  readonly label: string;
  readonly pin: string;
}

export class TokenSession {
  readonly label: string;
  readonly #module: LoadedModule;
  readonly #slotKey: string;
  readonly #session: ObjectHandle;
  /** The PKCS#11 functions this session uses, counting into `counters`. */
  readonly #p: CountedPkcs11;
  /** PKCS#11 calls and objects created/destroyed by this session (counters.ts); read by other threads. */
  readonly counters: Float64Array;
  /** Working copies by Joinkeep handle, least recently used first; undefined when copies are off or refused. */
  readonly #copies: Map<KeyHandle, WorkingCopy> | undefined;
  /** Keys the token would not copy (e.g. CKA_COPYABLE=false): used directly, without asking again. */
  readonly #uncopyable = new Set<KeyHandle>();
  readonly #copyTtlMs: number;
  readonly #wrapWithTrusted: boolean;
  readonly #objectLock: TokenLock | undefined;
  /** Object handles by Joinkeep handle; re-found when the token says a handle is stale, dropped by destroy(). */
  readonly #cache = new Map<KeyHandle, TokenKey>();
  /**
   * Label → token objects, read once by enumerating the token. SoftHSM2 scans every object on each C_FindObjects
   * by label (measured: 64 ms per look-up with 2,000 keys, growing linearly), so a first use of each key cost a
   * full scan per worker; one enumeration replaces them all. Keys created later (by another session or process)
   * are still found by a targeted search on a miss.
   */
  #labelIndex: Map<KeyHandle, ObjectHandle[]> | undefined;
  #open = true;

  private constructor(module: LoadedModule, label: string, slotKey: string, session: ObjectHandle, counters: Float64Array, options: TokenSessionOptions) {
    this.#module = module;
    this.label = label;
    this.#slotKey = slotKey;
    this.#session = session;
    this.counters = counters;
    this.#p = countedPkcs11(module.pkcs11, counters);
    this.#copies = options.workingCopies === false ? undefined : new Map();
    this.#copyTtlMs = options.workingCopyTtlMs ?? COPY_TTL_MS;
    this.#wrapWithTrusted = options.wrapWithTrusted === true;
    this.#objectLock = options.objectLock === undefined ? undefined : new TokenLock(options.objectLock);
  }

  /**
   * Opens a read-write session on the token labelled `token.label` and logs the user in. `counters` (counters.ts,
   * over a SharedArrayBuffer) lets another thread read what this session asks of the token.
   */
  static open(module: LoadedModule, token: TokenIdentity, counters: Float64Array = newCounterArray(), options: TokenSessionOptions = {}): TokenSession {
    const K = pkcs11Lib();
    const p = module.pkcs11;
    let slots: ObjectHandle[];
    try {
      slots = p.C_GetSlotList(true);
    } catch (error) {
      throw new CustodyError('TOKEN_UNAVAILABLE', `cannot list the slots of ${module.path}: ${ckrName(error) ?? String(error)}`);
    }
    const present: string[] = [];
    let slot: ObjectHandle | undefined;
    for (const s of slots) {
      let label: string;
      try {
        label = p.C_GetTokenInfo(s).label.trimEnd();
      } catch {
        continue; // a token that does not answer (SoftHSM2: its storage is gone) cannot be the one asked for
      }
      present.push(label);
      if (label === token.label && slot === undefined) slot = s;
    }
    if (slot === undefined) {
      const list = present.length === 0 ? 'none' : present.map((l) => `"${l}"`).join(', ');
      throw new CustodyError('TOKEN_UNAVAILABLE', `no PKCS#11 token labelled "${token.label}" in ${module.path} (tokens present: ${list})`);
    }
    let session: ObjectHandle;
    try {
      session = p.C_OpenSession(slot, K.CKF_SERIAL_SESSION | K.CKF_RW_SESSION);
    } catch (error) {
      throw new CustodyError('TOKEN_UNAVAILABLE', `cannot open a session on token "${token.label}": ${ckrName(error) ?? String(error)}`);
    }
    const slotKey = slot.toString('hex');
    try {
      acquireLogin(module, slotKey, session, token.pin, token.label);
    } catch (error) {
      p.C_CloseSession(session);
      throw error;
    }
    return new TokenSession(module, token.label, slotKey, session, counters, options);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Operations. Each maps PKCS#11 failures to CustodyErrors naming handles and labels, never key material.

  /** The full 16-byte AES-CMAC (RFC 4493): SoftHSM 2.6.1 has no truncated CMAC (spec-notes §9.1). */
  cmac(handle: KeyHandle, derive: Uint8Array | undefined, message: Uint8Array): Buffer {
    return this.#op(`CMAC with ${handle}`, [handle], () =>
      this.#withRootOrDerived(handle, derive, (key) => {
        const p = this.#p;
        p.C_SignInit(this.#session, { mechanism: pkcs11Lib().CKM_AES_CMAC }, key);
        return Buffer.from(p.C_Sign(this.#session, Buffer.from(message), Buffer.alloc(16)));
      }),
    );
  }

  /** AES-128-ECB decryption of whole blocks (the Join-accept "encryption", LoRaWAN 1.1 §6.2.3). */
  ecbDecrypt(handle: KeyHandle, derive: Uint8Array | undefined, data: Uint8Array): Buffer {
    return this.#op(`AES decryption with ${handle}`, [handle], () =>
      this.#withRootOrDerived(handle, derive, (key) => {
        const p = this.#p;
        p.C_DecryptInit(this.#session, { mechanism: pkcs11Lib().CKM_AES_ECB }, key);
        return Buffer.from(p.C_Decrypt(this.#session, Buffer.from(data), Buffer.alloc(data.length)));
      }),
    );
  }

  /**
   * Derives AES(root, block) as a session object and wraps it (RFC 3394) under the KEK; the object is destroyed.
   * In trusted-KEK mode the derived key carries CKA_WRAP_WITH_TRUSTED=true (PKCS#11 v2.40 §4.9): the token itself
   * refuses to wrap it under a KEK without CKA_TRUSTED, whoever asks (CKR_KEY_NOT_WRAPPABLE, measured on SoftHSM2
   * 2.6.1), and the attribute cannot be cleared on the object or a copy of it.
   */
  deriveWrapped(root: KeyHandle, block: Uint8Array, kekLabel: string, kek: KeyHandle): Buffer {
    return this.#op(`deriving from ${root} and wrapping under KEK "${kekLabel}"`, [root, kek], () => {
      const rootKey = this.#working(root, this.#key(root, 'root'));
      const kekKey = this.#working(kek, this.#kek(kek, kekLabel));
      const K = pkcs11Lib();
      const trusted: Template = this.#wrapWithTrusted ? [{ type: K.CKA_WRAP_WITH_TRUSTED, value: true }] : [];
      // Sensitive but extractable: C_WrapKey refuses a non-extractable key (CKR_KEY_UNEXTRACTABLE, spec-notes §9.1).
      return this.#withDerived(rootKey, block, { sensitive: true, extractable: true, flags: EXPORT_FLAGS, extra: trusted }, (derived) => {
        try {
          return Buffer.from(this.#p.C_WrapKey(this.#session, { mechanism: K.CKM_AES_KEY_WRAP }, kekKey, derived, Buffer.alloc(48)));
        } catch (error) {
          if (this.#wrapWithTrusted && ckrName(error) === 'CKR_KEY_NOT_WRAPPABLE') {
            throw new CustodyError(
              'KEK_NOT_TRUSTED',
              `KEK "${kekLabel}" on token "${this.label}" is not trusted (CKA_TRUSTED=false): in trusted-KEK mode session keys are wrapped only under KEKs the Security Officer created with \`joinkeep kek add --key-file\``,
            );
          }
          throw error;
        }
      });
    });
  }

  /** Derives AES(root, block) as a non-sensitive session object and reads its value; the object is destroyed. */
  deriveClear(root: KeyHandle, block: Uint8Array): Buffer {
    return this.#op(`deriving from ${root} for a clear export`, [root], () => {
      const rootKey = this.#working(root, this.#key(root, 'root'));
      return this.#withDerived(rootKey, block, { sensitive: false, extractable: true, flags: EXPORT_FLAGS }, (derived) => {
        const [value] = this.#p.C_GetAttributeValue(this.#session, derived, [{ type: pkcs11Lib().CKA_VALUE }]);
        return Buffer.from(value?.value ?? Buffer.alloc(0));
      });
    });
  }

  /** The one clear import: a KEK from the operator's file, created sensitive and non-extractable. */
  createKek(handle: KeyHandle, value: Uint8Array, createdAt: Date): void {
    this.#op(`creating ${handle}`, [], () => {
      // A KEK the user creates is never trusted: it could wrap nothing in this mode (trusted-kek.ts makes KEKs).
      if (this.#wrapWithTrusted) throw trustedModeRefusal(handle, 'created by the user');
      if (this.#find(handle) !== undefined) throw new CustodyError('KEY_EXISTS', `a key named ${handle} already exists`);
      const K = pkcs11Lib();
      this.#tokenObjects(() => this.#p.C_CreateObject(this.#session, [...tokenKeyTemplate(handle, 'kek', createdAt), { type: K.CKA_VALUE, value: Buffer.from(value) }]));
    });
  }

  /**
   * C_UnwrapKey (RFC 3394) under the KEK straight into a token object. The order of refusals is the software
   * keystore's: KEK_NOT_FOUND, then UNWRAP_FAILED, then INVALID_KEY (size), then KEY_EXISTS. When the size is wrong
   * or the handle is taken, the envelope is first checked by an unwrap into a capability-less session object,
   * destroyed at once, so that a bad envelope still reads as UNWRAP_FAILED.
   */
  unwrapInto(handle: KeyHandle, usage: KeyUsage, wrapped: Uint8Array, kekLabel: string, kek: KeyHandle, createdAt: Date): void {
    this.#op(`unwrapping ${handle} under KEK "${kekLabel}"`, [kek], () => {
      // Only the Security Officer can mark a KEK trusted, and cannot unwrap under the user's private KEKs, nor mark
      // an unwrapped key afterwards (CKR_ATTRIBUTE_READ_ONLY, docs/security.md): an unwrapped KEK is never trusted.
      if (usage === 'kek' && this.#wrapWithTrusted) throw trustedModeRefusal(handle, 'unwrapped from an envelope');
      const kekKey = this.#kek(kek, kekLabel);
      const refused = (): CustodyError =>
        new CustodyError('UNWRAP_FAILED', `the key for ${handle} does not unwrap under KEK "${kekLabel}" (wrong KEK or corrupted envelope)`);
      // RFC 3394: the envelope is the key plus one 8-byte integrity block.
      const keyLength = wrapped.length - 8;
      const sizes = usage === 'kek' ? [16, 24, 32] : [16];
      const exists = this.#find(handle) !== undefined;
      const mechanism = { mechanism: pkcs11Lib().CKM_AES_KEY_WRAP };
      if (!sizes.includes(keyLength) || exists) {
        let probe: ObjectHandle;
        try {
          probe = this.#p.C_UnwrapKey(this.#session, mechanism, kekKey.object, Buffer.from(wrapped), probeTemplate());
        } catch (error) {
          throw this.#unwrapError(error, refused);
        }
        this.#p.C_DestroyObject(this.#session, probe);
        if (!sizes.includes(keyLength)) {
          throw new CustodyError('INVALID_KEY', `the key for ${handle} unwrapped to ${keyLength} bytes; ${usage === 'kek' ? 'a KEK is 16, 24 or 32' : 'LoRaWAN root keys are 16'} bytes`);
        }
        throw new CustodyError('KEY_EXISTS', `a key named ${handle} already exists`);
      }
      // No CKA_VALUE_LEN in the template: SoftHSM 2.6.1 refuses it on unwrap (CKR_ATTRIBUTE_READ_ONLY, measured);
      // the length was checked above from the envelope.
      try {
        this.#tokenObjects(() => this.#p.C_UnwrapKey(this.#session, mechanism, kekKey.object, Buffer.from(wrapped), this.#rootTemplate(handle, usage, createdAt)));
      } catch (error) {
        throw this.#unwrapError(error, refused);
      }
    });
  }

  // ---------------------------------------------------------------------------------------------------------
  // Sealed batches (docs/specs/sealed-batch.md). Token objects are created here only from a worker the custody
  // serialises (pkcs11-custody.ts): SoftHSM2 2.6.1 does not always survive concurrent creation of token objects, nor
  // a search during one (#tokenObjects).

  /**
   * C_GenerateKeyPair (RSA-3072, e = 65537) into token objects: the private key sensitive, non-extractable, UNWRAP
   * only; the public key public, wrapping nothing. The pair is generated under a provisional label and then labelled
   * `receiving/<kid>` (the kid is the public key's thumbprint, known only once it exists).
   */
  generateReceivingKey(createdAt: Date): ReceivingKeyInfo {
    return this.#op('creating a receiving key', [], () => {
      const K = pkcs11Lib();
      const pending = `${RECEIVING_PENDING_PREFIX}${randomBytes(8).toString('hex')}`;
      const pair = this.#tokenObjects(() =>
        this.#p.C_GenerateKeyPair(
          this.#session,
          { mechanism: K.CKM_RSA_PKCS_KEY_PAIR_GEN },
          [...receivingPublicTemplate(pending, createdAt), { type: K.CKA_MODULUS_BITS, value: RECEIVING_KEY_BITS }, { type: K.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) }],
          receivingPrivateTemplate(pending, createdAt, { token: true, extractable: false }),
        ),
      );
      try {
        const info = this.#receivingInfo(pair.publicKey, createdAt);
        const handle = receivingKeyHandle(info.kid);
        this.#tokenObjects(() => {
          for (const object of [pair.privateKey, pair.publicKey]) {
            this.#p.C_SetAttributeValue(this.#session, object, [{ type: K.CKA_LABEL, value: handle }, { type: K.CKA_ID, value: objectId(handle, createdAt) }]);
          }
        });
        return info;
      } catch (error) {
        this.#destroyQuietly([pair.privateKey, pair.publicKey]);
        throw error;
      }
    });
  }

  /**
   * The first token of a pool (replicated-custody.ts): generates the pair as *session* objects, the private key
   * extractable, wraps it (CKM_AES_KEY_WRAP_PAD, RFC 5649) under the one-time transport key, unwraps it back into
   * the non-extractable token object `receiving/<kid>` and stores the public key; the extractable private key and the
   * transport key are destroyed before this returns, whatever happens, and never were token objects.
   */
  generateReplicableReceivingKey(transportKey: Uint8Array, createdAt: Date): { info: ReceivingKeyInfo; wrapped: Buffer } {
    return this.#op('creating a receiving key for a pool', [], () => {
      const K = pkcs11Lib();
      const pending = `${RECEIVING_PENDING_PREFIX}${randomBytes(8).toString('hex')}`;
      // The transport key wraps the private key here and unwraps it again just below, on the same token.
      const transport = this.#transportKey(transportKey, KEK_FLAGS);
      const pair = (() => {
        try {
          return this.#p.C_GenerateKeyPair(
            this.#session,
            { mechanism: K.CKM_RSA_PKCS_KEY_PAIR_GEN },
            [...receivingPublicTemplate(pending, createdAt).map((a) => (a.type === K.CKA_TOKEN ? { type: K.CKA_TOKEN, value: false } : a)), { type: K.CKA_MODULUS_BITS, value: RECEIVING_KEY_BITS }, { type: K.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) }],
            receivingPrivateTemplate(pending, createdAt, { token: false, extractable: true }),
          );
        } catch (error) {
          this.#destroyQuietly([transport]);
          throw error;
        }
      })();
      try {
        const info = this.#receivingInfo(pair.publicKey, createdAt);
        const wrapped = Buffer.from(this.#p.C_WrapKey(this.#session, { mechanism: K.CKM_AES_KEY_WRAP_PAD }, transport, pair.privateKey, Buffer.alloc(8192)));
        this.#storeReceivingReplica(info, wrapped, transport, createdAt);
        return { info, wrapped };
      } finally {
        this.#destroyQuietly([pair.privateKey, pair.publicKey, transport]);
      }
    });
  }

  /**
   * Another token of a pool: unwraps the private key (CKM_AES_KEY_WRAP_PAD) under the one-time transport key into the
   * non-extractable token object `receiving/<kid>`, checks it is the key `info` names, and stores the public key.
   */
  importReceivingReplica(info: ReceivingKeyInfo, wrapped: Uint8Array, transportKey: Uint8Array, createdAt: Date): void {
    this.#op(`storing a copy of receiving key ${info.kid}`, [], () => {
      if (this.#findPair(receivingKeyHandle(info.kid)).length > 0) throw new CustodyError('KEY_EXISTS', `a key named ${receivingKeyHandle(info.kid)} already exists`);
      const transport = this.#transportKey(transportKey, UNWRAP_ONLY_FLAGS);
      try {
        this.#storeReceivingReplica(info, Buffer.from(wrapped), transport, createdAt);
      } finally {
        this.#destroyQuietly([transport]);
      }
    });
  }

  /** Every receiving key on the token (private keys with the receiving key's attribute set), oldest first. */
  receivingKeys(): ReceivingKeyInfo[] {
    return this.#op('listing receiving keys', [], () => {
      const out: ReceivingKeyInfo[] = [];
      for (const { object, handle, id } of this.#receivingPrivateKeys()) {
        const info = this.#receivingInfo(object, createdAtFromId(handle, id));
        // Only a key labelled with its own thumbprint is one createReceivingKey made.
        if (receivingKeyHandle(info.kid) === handle) out.push(info);
      }
      return out.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
    });
  }

  /**
   * Refuses an import before anything is created: KEY_NOT_FOUND unless `from` (the receiving key, or the derivation
   * master) is on the token with that usage; KEY_EXISTS when a handle of the batch is taken. One fresh enumeration of
   * the token's keys answers for every handle (a search by label scans the whole token on SoftHSM2).
   */
  checkImport(from: { readonly handle: KeyHandle; readonly usage: 'receiving' | 'derivation' }, handles: readonly KeyHandle[]): void {
    this.#op('checking an import', [], () => {
      if (from.usage === 'receiving') {
        if (this.#receivingPrivate(from.handle) === undefined) throw new CustodyError('KEY_NOT_FOUND', `no receiving key named ${from.handle} on token "${this.label}"`);
      } else {
        this.#key(from.handle, 'derivation');
      }
      this.#labelIndex = undefined;
      const index = this.#index();
      const taken = handles.filter((h) => index.has(h));
      if (taken.length > 0) throw new CustodyError('KEY_EXISTS', `${taken.length} key(s) of the batch already exist, e.g. ${taken.slice(0, 3).join(', ')}; nothing was imported`);
    });
  }

  /**
   * One chunk of a sealed import: C_UnwrapKey (RSA-OAEP) of the batch key into a session object that can only unwrap,
   * then C_UnwrapKey (CKM_AES_KEY_WRAP, RFC 3394) of each key straight into a token object with the template of a
   * root key (or derivation master); the batch key is destroyed at the end. All or nothing: a failure destroys the
   * token objects this chunk created before it is reported (the custody removes earlier chunks').
   * `checkOnly`: each key is unwrapped into a session object that can do nothing and destroyed at once, so that a bad
   * envelope is found before any token object exists (the custody checks every chunk so before importing any).
   */
  importSealedChunk(
    receiving: KeyHandle,
    oaep: OaepHash,
    encryptedBatchKey: Uint8Array,
    keys: readonly { readonly handle: KeyHandle; readonly usage: 'root' | 'derivation'; readonly wrapped: Uint8Array }[],
    createdAt: Date,
    checkOnly = false,
  ): void {
    this.#op(`${checkOnly ? 'checking' : 'importing'} ${keys.length} sealed key(s)`, [], () => {
      const privateKey = this.#receivingPrivate(receiving);
      if (privateKey === undefined) throw new CustodyError('KEY_NOT_FOUND', `no receiving key named ${receiving} on token "${this.label}"`);
      const batch = this.#unwrapBatchKey(privateKey, oaep, encryptedBatchKey, receiving);
      const created: ObjectHandle[] = [];
      try {
        const mechanism = { mechanism: pkcs11Lib().CKM_AES_KEY_WRAP };
        for (const { handle, usage, wrapped } of keys) {
          const refused = (): CustodyError =>
            new CustodyError('UNWRAP_FAILED', `the key for ${handle} does not unwrap under the batch key (corrupted or truncated envelope, or sealed under another batch key); nothing was imported`);
          // RFC 3394: a 16-byte key wraps to 24 bytes. Another length is a bad envelope, or a key of the wrong size.
          if (wrapped.length !== 24) {
            let probe: ObjectHandle;
            try {
              probe = this.#p.C_UnwrapKey(this.#session, mechanism, batch, Buffer.from(wrapped), probeTemplate());
            } catch (error) {
              throw this.#unwrapError(error, refused);
            }
            this.#p.C_DestroyObject(this.#session, probe);
            throw new CustodyError('INVALID_KEY', `the key for ${handle} unwrapped to ${wrapped.length - 8} bytes; ${usage === 'root' ? 'LoRaWAN root keys are' : 'a derivation master key is'} 16 bytes; nothing was imported`);
          }
          let object: ObjectHandle;
          try {
            object = this.#tokenObjects(() => this.#p.C_UnwrapKey(this.#session, mechanism, batch, Buffer.from(wrapped), checkOnly ? probeTemplate() : this.#rootTemplate(handle, usage, createdAt)));
          } catch (error) {
            throw this.#unwrapError(error, refused);
          }
          if (checkOnly) this.#p.C_DestroyObject(this.#session, object);
          else created.push(object);
        }
      } catch (error) {
        this.#destroyQuietly(created);
        throw error;
      } finally {
        this.#destroyQuietly([batch]);
      }
    });
  }

  /**
   * One chunk of importDerived: C_DeriveKey (CKM_AES_CBC_ENCRYPT_DATA, zero IV: one AES-128 encryption of the block,
   * JK-KDF-1) from the derivation master straight into a root-key token object per block. All or nothing per chunk.
   */
  deriveRootKeys(master: KeyHandle, keys: readonly { readonly handle: KeyHandle; readonly block: Uint8Array }[], createdAt: Date): void {
    this.#op(`deriving ${keys.length} root key(s) from ${master}`, [master], () => {
      const K = pkcs11Lib();
      const base = this.#working(master, this.#key(master, 'derivation'));
      const created: ObjectHandle[] = [];
      try {
        for (const { handle, block } of keys) {
          assertBlock(block);
          // #derive sets class, key type, length and CKA_PRIVATE itself.
          const template = this.#rootTemplate(handle, 'root', createdAt).filter((a) => a.type !== K.CKA_CLASS && a.type !== K.CKA_KEY_TYPE && a.type !== K.CKA_PRIVATE);
          created.push(this.#tokenObjects(() => this.#derive(base, block, template)));
        }
      } catch (error) {
        this.#destroyQuietly(created);
        throw error;
      }
    });
  }

  /** Destroys every token object labelled with one of `handles` (keys and key pairs); handles not held are ignored. */
  destroyMany(handles: readonly KeyHandle[]): void {
    for (const handle of handles) this.#drop(handle);
    this.#op(`deleting ${handles.length} key(s)`, [], () => {
      this.#labelIndex = undefined;
      const index = this.#index();
      this.#tokenObjects(() => {
        for (const handle of handles) {
          // One enumeration answers for every handle; only a label found twice is searched again (#findObjects).
          const objects = index.get(handle) ?? [];
          for (const object of objects.length > 1 ? this.#findObjects(handle) : objects) this.#p.C_DestroyObject(this.#session, object);
          if (handle.startsWith('receiving/')) for (const object of this.#findPair(handle)) this.#p.C_DestroyObject(this.#session, object);
        }
      });
    });
    for (const handle of handles) this.#drop(handle);
  }

  /** tokenKeyTemplate in this session's mode: root keys exportable only under trusted keys in trusted-KEK mode. */
  #rootTemplate(handle: KeyHandle, usage: KeyUsage, createdAt: Date): Template {
    return tokenKeyTemplate(handle, usage, createdAt, { wrapWithTrusted: this.#wrapWithTrusted });
  }

  #receivingInfo(object: ObjectHandle, createdAt: Date): ReceivingKeyInfo {
    const K = pkcs11Lib();
    const [n, e] = this.#p.C_GetAttributeValue(this.#session, object, [{ type: K.CKA_MODULUS }, { type: K.CKA_PUBLIC_EXPONENT }]);
    const jwk = receivingKeyJwk(n?.value ?? Buffer.alloc(0), e?.value ?? Buffer.alloc(0));
    return { kid: jwk.kid, jwk, createdAt };
  }

  /** A one-time AES-256 transport key as a session object that can only wrap or only unwrap; `value` is zeroised. */
  #transportKey(value: Uint8Array, flags: UsageFlags): ObjectHandle {
    const K = pkcs11Lib();
    const clear = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    try {
      return this.#p.C_CreateObject(this.#session, [...ephemeralAesTemplate(flags), { type: K.CKA_VALUE, value: clear }]);
    } finally {
      clear.fill(0); // this thread's copy of the transport key (the caller zeroises its own)
    }
  }

  /** Unwraps the private key under the transport key into `receiving/<kid>`, checks its modulus, stores the public key. */
  #storeReceivingReplica(info: ReceivingKeyInfo, wrapped: Buffer, transport: ObjectHandle, createdAt: Date): void {
    const K = pkcs11Lib();
    const handle = receivingKeyHandle(info.kid);
    const privateKey = this.#tokenObjects(() => this.#p.C_UnwrapKey(this.#session, { mechanism: K.CKM_AES_KEY_WRAP_PAD }, transport, wrapped, receivingPrivateTemplate(handle, createdAt, { token: true, extractable: false })));
    const created = [privateKey];
    try {
      const copy = this.#receivingInfo(privateKey, createdAt);
      if (copy.kid !== info.kid) throw new CustodyError('TOKEN_ERROR', `the receiving key unwrapped on token "${this.label}" is ${copy.kid}, not ${info.kid}`);
      const modulus = Buffer.from(info.jwk.n, 'base64url');
      const exponent = Buffer.from(info.jwk.e, 'base64url');
      created.push(this.#tokenObjects(() => this.#p.C_CreateObject(this.#session, [...receivingPublicTemplate(handle, createdAt), { type: K.CKA_MODULUS, value: modulus }, { type: K.CKA_PUBLIC_EXPONENT, value: exponent }])));
    } catch (error) {
      this.#destroyQuietly(created);
      throw error;
    }
  }

  /**
   * C_UnwrapKey of the batch key with CKM_RSA_PKCS_OAEP (MGF1 with the same hash, no label) into a session object:
   * AES, sensitive, non-extractable, UNWRAP only. MECHANISM_UNSUPPORTED when the token cannot do SHA-256 OAEP.
   */
  #unwrapBatchKey(privateKey: ObjectHandle, oaep: OaepHash, encrypted: Uint8Array, receiving: KeyHandle): ObjectHandle {
    const K = pkcs11Lib();
    const sha256 = oaep === 'sha256';
    const mechanism = {
      mechanism: K.CKM_RSA_PKCS_OAEP,
      parameter: { type: K.CK_PARAMS_RSA_OAEP, hashAlg: sha256 ? K.CKM_SHA256 : K.CKM_SHA_1, mgf: sha256 ? K.CKG_MGF1_SHA256 : K.CKG_MGF1_SHA1, source: CKZ_DATA_SPECIFIED } as { type: number },
    };
    const refused = (): CustodyError =>
      new CustodyError('UNWRAP_FAILED', `the batch key does not decrypt with receiving key ${receiving} (sealed to another key, another OAEP hash, or corrupted); nothing was imported`);
    let batch: ObjectHandle;
    try {
      batch = this.#p.C_UnwrapKey(this.#session, mechanism, privateKey, Buffer.from(encrypted), ephemeralAesTemplate(UNWRAP_ONLY_FLAGS));
    } catch (error) {
      const ckr = ckrName(error) ?? '';
      if (sha256 && OAEP_UNSUPPORTED.has(ckr)) {
        throw new CustodyError(
          'MECHANISM_UNSUPPORTED',
          `token "${this.label}" cannot unwrap with RSA-OAEP-256 (CKM_RSA_PKCS_OAEP with SHA-256 and MGF1-SHA-256: ${ckr}; SoftHSM2 2.6.1 unwraps with SHA-1 only): seal the batch with "RSA-OAEP" (SHA-1) instead; nothing was imported`,
        );
      }
      throw this.#unwrapError(error, refused);
    }
    // A batch key is AES-256 (32 bytes); anything else was not sealed by a conforming tool. SoftHSM2 2.6.1 reports
    // CKA_VALUE_LEN 0 for an unwrapped AES key (and refuses it in the template), so the check is made only where the
    // token reports a length; the software keystore always makes it.
    const [length] = this.#p.C_GetAttributeValue(this.#session, batch, [{ type: K.CKA_VALUE_LEN }]);
    const bytes = ulong(length?.value ?? Buffer.alloc(0));
    if (bytes > 0 && bytes !== 32) {
      this.#destroyQuietly([batch]);
      throw refused();
    }
    return batch;
  }

  /** The receiving private key labelled `handle`, if the token holds one with the receiving key's attributes. */
  #receivingPrivate(handle: KeyHandle): ObjectHandle | undefined {
    return this.#receivingPrivateKeys(handle)[0]?.object;
  }

  /** Private keys with the receiving key's attribute set (labelled `handle` when given). */
  #receivingPrivateKeys(handle?: KeyHandle): { object: ObjectHandle; handle: KeyHandle; id: Buffer | undefined }[] {
    const K = pkcs11Lib();
    const template: Template = [{ type: K.CKA_CLASS, value: K.CKO_PRIVATE_KEY }, { type: K.CKA_TOKEN, value: true }];
    if (handle !== undefined) template.push({ type: K.CKA_LABEL, value: handle });
    const out: { object: ObjectHandle; handle: KeyHandle; id: Buffer | undefined }[] = [];
    for (const object of this.#findAll(template)) {
      const types = [K.CKA_LABEL, K.CKA_ID, K.CKA_KEY_TYPE, K.CKA_SENSITIVE, K.CKA_EXTRACTABLE, K.CKA_UNWRAP, K.CKA_DECRYPT, K.CKA_SIGN];
      const values = this.#p.C_GetAttributeValue(this.#session, object, types.map((type) => ({ type })));
      const at = (i: number): Buffer => values[i]?.value ?? Buffer.alloc(0);
      const label = at(0).toString('utf8');
      if (!label.startsWith('receiving/')) continue;
      if (ulong(at(2)) !== K.CKK_RSA || !bool(at(3)) || bool(at(4)) || !bool(at(5)) || bool(at(6)) || bool(at(7))) continue;
      out.push({ object, handle: label, id: at(1) });
    }
    return out;
  }

  /** The private and public key objects labelled `handle`. */
  #findPair(handle: KeyHandle): ObjectHandle[] {
    const K = pkcs11Lib();
    return [K.CKO_PRIVATE_KEY, K.CKO_PUBLIC_KEY].flatMap((cls) => this.#findAll([{ type: K.CKA_CLASS, value: cls }, { type: K.CKA_TOKEN, value: true }, { type: K.CKA_LABEL, value: handle }]));
  }

  #destroyQuietly(objects: readonly ObjectHandle[]): void {
    this.#tokenObjects(() => {
      for (const object of objects) {
        try {
          this.#p.C_DestroyObject(this.#session, object);
        } catch {
          // already gone (a session object dies with its session at the latest)
        }
      }
    });
  }

  /**
   * Runs `fn`, which searches the token or creates, changes or destroys token objects (or copies one), holding the
   * pool's lock on the token's objects (token-lock.ts): on SoftHSM2 a search during such a call can fail the call.
   */
  #tokenObjects<T>(fn: () => T): T {
    return this.#objectLock === undefined ? fn() : this.#objectLock.exclusive(fn);
  }

  /** Refuses (KEY_NOT_FOUND / KEK_NOT_FOUND, as the operations would) unless `handle` is a key of that usage. */
  check(handle: KeyHandle, usage: KeyUsage, kekLabel?: string): void {
    this.#op(`looking up ${handle}`, [], () => {
      if (usage === 'kek') this.#kek(handle, kekLabel ?? handle);
      else this.#key(handle, usage);
    });
  }

  /** Any secret-key token object labelled `handle`, whatever its usage (as the software keystore's hasKey). */
  has(handle: KeyHandle): boolean {
    return this.#op(`looking up ${handle}`, [], () => this.#cache.has(handle) || this.#findObjects(handle).length > 0 || (handle.startsWith('receiving/') && this.#findPair(handle).length > 0));
  }

  /** Destroys the token object(s) labelled `handle` and forgets the cached object handle. */
  destroy(handle: KeyHandle): void {
    this.#drop(handle);
    this.#op(`deleting ${handle}`, [], () =>
      this.#tokenObjects(() => {
        for (const object of this.#findObjects(handle)) this.#p.C_DestroyObject(this.#session, object);
        // A receiving key is a key pair: its private and public key objects carry the handle as their label.
        if (handle.startsWith('receiving/')) for (const object of this.#findPair(handle)) this.#p.C_DestroyObject(this.#session, object);
      }),
    );
    this.#drop(handle);
  }

  /** Health probe: the token answers C_GetTokenInfo and this session is still open. Uses no key. */
  probe(): void {
    this.#op('health probe', [], () => {
      const p = this.#module.pkcs11; // not counted: the per-join figures are about key work
      p.C_GetTokenInfo(Buffer.from(this.#slotKey, 'hex'));
      p.C_GetSessionInfo(this.#session);
    });
  }

  /** Drops a cached object handle (another session deleted the key; the pool tells every worker). */
  forget(handle: KeyHandle): void {
    this.#drop(handle);
  }

  #drop(handle: KeyHandle): void {
    this.#cache.delete(handle);
    this.#labelIndex?.delete(handle);
    this.#uncopyable.delete(handle);
    const copy = this.#copies?.get(handle);
    if (copy !== undefined) {
      this.#copies!.delete(handle);
      this.#destroyCopy(copy);
    }
  }

  /** The PKCS#11 session handle, so the pool can close the session of a worker that died holding it. */
  get sessionHandle(): ObjectHandle {
    return this.#session;
  }

  /** Joinkeep's keys on this token: labelled secret keys whose attribute set is a root key's or a KEK's. */
  list(): KeyInfo[] {
    return this.#op('listing keys', [], () => {
      // Listed again while it meets a copy being made by another session (transient-objects.ts): an object it cannot
      // read, or a handle twice. A duplicate that stays is listed, for the operator to see.
      const read = () => this.#readSecretKeys();
      const settled = (answer: { keys: KeyInfo[]; unreadable: unknown }) => answer.unreadable === undefined && new Set(answer.keys.map((k) => k.handle)).size === answer.keys.length;
      const { keys, unreadable } = searchUntilSettled(read(), read, settled);
      if (unreadable !== undefined) throw unreadable;
      const out = [...keys];
      for (const { object, handle, id } of this.#receivingPrivateKeys()) {
        out.push({ handle, usage: 'receiving', createdAt: createdAtFromId(handle, id), location: `PKCS#11 token "${this.label}"`, attributes: this.#protection(object) });
      }
      return out;
    });
  }

  /** The root keys, KEKs and derivation masters on the token, and the error of an object that could not be read. */
  #readSecretKeys(): { keys: KeyInfo[]; unreadable: unknown } {
    const K = pkcs11Lib();
    const keys: KeyInfo[] = [];
    let unreadable: unknown;
    for (const object of this.#findAll([{ type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_TOKEN, value: true }])) {
      try {
        const [label, id] = this.#p.C_GetAttributeValue(this.#session, object, [{ type: K.CKA_LABEL }, { type: K.CKA_ID }]);
        const handle = label?.value.toString('utf8') ?? '';
        const usage = handle === '' ? undefined : this.#classify(object);
        if (usage === undefined) continue;
        keys.push({ handle, usage, createdAt: createdAtFromId(handle, id?.value), location: `PKCS#11 token "${this.label}"`, attributes: this.#protection(object) });
      } catch (error) {
        unreadable = error;
      }
    }
    return { keys, unreadable };
  }

  /** The attributes an auditor asks about, read from the token; never CKA_VALUE. */
  #protection(object: ObjectHandle): Record<string, boolean> {
    const K = pkcs11Lib();
    // CKA_TRUSTED: a KEK the Security Officer created (trusted-KEK mode); CKA_WRAP_WITH_TRUSTED: the key itself
    // may only be wrapped under such a KEK (set on session keys in that mode; they are never kept, so never listed).
    const names = ['CKA_PRIVATE', 'CKA_SENSITIVE', 'CKA_EXTRACTABLE', 'CKA_ALWAYS_SENSITIVE', 'CKA_NEVER_EXTRACTABLE', 'CKA_SIGN', 'CKA_ENCRYPT', 'CKA_DECRYPT', 'CKA_DERIVE', 'CKA_WRAP', 'CKA_UNWRAP', 'CKA_TRUSTED', 'CKA_WRAP_WITH_TRUSTED'] as const;
    const out: Record<string, boolean> = {};
    for (const name of names) {
      try {
        const [a] = this.#p.C_GetAttributeValue(this.#session, object, [{ type: K[name] }]);
        const v = a?.value;
        if (Buffer.isBuffer(v) && v.length > 0) out[name] = v[0] !== 0;
      } catch {
        // an attribute the token does not report is left out
      }
    }
    return out;
  }

  close(): void {
    if (!this.#open) return;
    this.#open = false;
    this.#cache.clear();
    this.#copies?.clear();
    this.#uncopyable.clear();
    this.#labelIndex = undefined;
    // Closing the session also destroys its session objects: the working copies and any that survived an error.
    releaseLogin(this.#module, this.#slotKey, this.#session);
    try {
      this.#module.pkcs11.C_CloseSession(this.#session);
    } catch {
      // CKR_SESSION_HANDLE_INVALID / CKR_CRYPTOKI_NOT_INITIALIZED: already gone
    }
  }

  // ---------------------------------------------------------------------------------------------------------

  /** Runs `body`; a stale cached object handle is dropped and the body runs once more with fresh look-ups. */
  #op<T>(what: string, handles: readonly KeyHandle[], body: () => T): T {
    if (!this.#open) throw new CustodyError('TOKEN_UNAVAILABLE', `the session on token "${this.label}" is closed`);
    try {
      try {
        return body();
      } catch (error) {
        if (!STALE_HANDLE.has(ckrName(error) ?? '')) throw error;
        for (const h of handles) this.#drop(h);
        return body();
      }
    } catch (error) {
      if (error instanceof CustodyError) throw error;
      const ckr = ckrName(error);
      throw new CustodyError('TOKEN_ERROR', `${what} on token "${this.label}" failed: ${ckr ?? (error instanceof Error ? error.message : String(error))}`);
    }
  }

  #unwrapError(error: unknown, refused: () => CustodyError): unknown {
    const ckr = ckrName(error);
    if (ckr === undefined || STALE_HANDLE.has(ckr) || TOKEN_FAILURE.test(ckr)) return error;
    // SoftHSM 2.6.1 answers a wrong KEK with CKR_GENERAL_ERROR, a truncated envelope with CKR_WRAPPED_KEY_LEN_RANGE.
    return refused();
  }

  /** Runs `use` with the root key (its working copy), or with the lifetime key derived from it by `derive`. */
  #withRootOrDerived<T>(handle: KeyHandle, derive: Uint8Array | undefined, use: (key: ObjectHandle) => T): T {
    const root = this.#key(handle, 'root');
    const working = this.#working(handle, root);
    if (derive === undefined) return use(working);
    assertBlock(derive);
    const copy = this.#copies?.get(handle);
    if (copy === undefined) return this.#withDerived(working, derive, { sensitive: true, extractable: false, flags: USE_FLAGS }, use);
    const block = Buffer.from(derive).toString('hex');
    let lifetime = copy.lifetime.get(block);
    if (lifetime === undefined) {
      lifetime = this.#derive(copy.object, derive, [
        { type: pkcs11Lib().CKA_TOKEN, value: false },
        { type: pkcs11Lib().CKA_SENSITIVE, value: true },
        { type: pkcs11Lib().CKA_EXTRACTABLE, value: false },
        ...flagAttributes(USE_FLAGS),
      ]);
      copy.lifetime.set(block, lifetime);
    }
    return use(lifetime);
  }

  /**
   * The object an operation on `key` uses: its working copy (made, or made again after COPY_TTL_MS, from the token
   * object), or the token object itself when copies are off or the token refuses them.
   */
  #working(handle: KeyHandle, key: TokenKey): ObjectHandle {
    const copies = this.#copies;
    if (copies === undefined || this.#uncopyable.has(handle)) return key.object;
    const now = performance.now();
    const copy = copies.get(handle);
    if (copy !== undefined) {
      copies.delete(handle);
      if (now - copy.madeAt < this.#copyTtlMs) {
        copies.set(handle, copy); // most recently used last
        return copy.object;
      }
      this.#destroyCopy(copy);
    }
    let object: ObjectHandle;
    try {
      object = this.#tokenObjects(() => this.#p.C_CopyObject(this.#session, key.object, [{ type: pkcs11Lib().CKA_TOKEN, value: false }]));
    } catch (error) {
      const ckr = ckrName(error) ?? '';
      // A deleted key (stale handle) is reported as such; a key the token will not copy is used directly.
      if (STALE_HANDLE.has(ckr) || TOKEN_FAILURE.test(ckr)) throw error;
      this.#uncopyable.add(handle);
      return key.object;
    }
    if (copies.size >= MAX_COPIES) {
      const [oldest, entry] = copies.entries().next().value as [KeyHandle, WorkingCopy];
      copies.delete(oldest);
      this.#destroyCopy(entry);
    }
    copies.set(handle, { object, madeAt: now, lifetime: new Map() });
    return object;
  }

  #destroyCopy(copy: WorkingCopy): void {
    for (const object of [...copy.lifetime.values(), copy.object]) {
      try {
        this.#p.C_DestroyObject(this.#session, object);
      } catch {
        // already gone with its session
      }
    }
  }

  /**
   * Derives AES-128-ECB(root, block) as a session object (CKA_TOKEN=false), runs `use`, and destroys the object
   * whatever happens. CKM_AES_CBC_ENCRYPT_DATA with a zero IV over one block is that one ECB encryption;
   * CKM_AES_ECB_ENCRYPT_DATA's parameter cannot be passed through pkcs11js (spec-notes §9.1).
   */
  #withDerived<T>(
    root: ObjectHandle,
    block: Uint8Array,
    kind: { readonly sensitive: boolean; readonly extractable: boolean; readonly flags: UsageFlags; readonly extra?: Template },
    use: (derived: ObjectHandle) => T,
  ): T {
    assertBlock(block);
    const K = pkcs11Lib();
    const derived = this.#derive(root, block, [
      { type: K.CKA_TOKEN, value: false },
      { type: K.CKA_SENSITIVE, value: kind.sensitive },
      { type: K.CKA_EXTRACTABLE, value: kind.extractable },
      ...flagAttributes(kind.flags),
      ...(kind.extra ?? []),
    ]);
    try {
      return use(derived);
    } finally {
      this.#p.C_DestroyObject(this.#session, derived);
    }
  }

  /** C_DeriveKey of the AES-128 key AES-128-ECB(root, block), with `attributes` added to the template. */
  #derive(root: ObjectHandle, block: Uint8Array, attributes: Template): ObjectHandle {
    const K = pkcs11Lib();
    return this.#p.C_DeriveKey(
      this.#session,
      { mechanism: K.CKM_AES_CBC_ENCRYPT_DATA, parameter: { type: K.CK_PARAMS_AES_CBC, iv: ZERO_IV, data: Buffer.from(block) } as { type: number } },
      root,
      [{ type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_KEY_TYPE, value: K.CKK_AES }, { type: K.CKA_VALUE_LEN, value: 16 }, { type: K.CKA_PRIVATE, value: true }, ...attributes],
    );
  }

  #kek(handle: KeyHandle, label: string): TokenKey {
    try {
      return this.#key(handle, 'kek');
    } catch (error) {
      if (error instanceof CustodyError && error.code === 'KEY_NOT_FOUND') {
        throw new CustodyError('KEK_NOT_FOUND', `no KEK labelled "${label}"; add it with \`joinkeep kek add\``);
      }
      throw error;
    }
  }

  #key(handle: KeyHandle, usage: KeyUsage): TokenKey {
    const key = this.#cache.get(handle) ?? this.#find(handle);
    if (key === undefined) throw new CustodyError('KEY_NOT_FOUND', `no key named ${handle}`);
    // Usage is checked on every use, cached or not: a KEK never MACs, encrypts or derives as a root key.
    if (key.usage !== usage) throw new CustodyError('KEY_NOT_FOUND', `${handle} is a ${key.usage} key, not a ${usage} key`);
    return key;
  }

  #find(handle: KeyHandle): TokenKey | undefined {
    const objects = this.#findObjects(handle);
    if (objects.length === 0) return undefined;
    if (objects.length > 1) throw new CustodyError('TOKEN_ERROR', `token "${this.label}" holds ${objects.length} keys labelled ${handle}; remove the extra ones`);
    const object = objects[0]!;
    const usage = this.#classify(object);
    if (usage === undefined) {
      throw new CustodyError('KEY_NOT_FOUND', `${handle} on token "${this.label}" is not a Joinkeep root key or KEK (unexpected attributes)`);
    }
    const key = { object, usage };
    this.#cache.set(handle, key);
    return key;
  }

  /** The token keys labelled `handle`: from the label index, else searched; a duplicate is searched again until it settles (transient-objects.ts). */
  #findObjects(handle: KeyHandle): ObjectHandle[] {
    const index = this.#index();
    const indexed = index.get(handle);
    if (indexed !== undefined && indexed.length <= 1) return indexed;
    const found = settleDuplicates(indexed ?? this.#searchLabel(handle), () => this.#searchLabel(handle));
    if (found.length > 0) index.set(handle, found);
    else index.delete(handle);
    return found;
  }

  #searchLabel(handle: KeyHandle): ObjectHandle[] {
    const K = pkcs11Lib();
    return this.#findAll([
      { type: K.CKA_CLASS, value: K.CKO_SECRET_KEY },
      { type: K.CKA_TOKEN, value: true },
      { type: K.CKA_LABEL, value: handle },
    ]);
  }

  /** Every token secret key by label, from one enumeration; made again while it meets an object it cannot read (transient-objects.ts). */
  #index(): Map<KeyHandle, ObjectHandle[]> {
    if (this.#labelIndex !== undefined) return this.#labelIndex;
    const read = () => this.#readIndex();
    const { index, unreadable } = searchUntilSettled(read(), read, (answer) => answer.unreadable === undefined);
    if (unreadable !== undefined) throw unreadable;
    this.#labelIndex = index;
    return index;
  }

  #readIndex(): { index: Map<KeyHandle, ObjectHandle[]>; unreadable: unknown } {
    const K = pkcs11Lib();
    const index = new Map<KeyHandle, ObjectHandle[]>();
    let unreadable: unknown;
    for (const object of this.#findAll([{ type: K.CKA_CLASS, value: K.CKO_SECRET_KEY }, { type: K.CKA_TOKEN, value: true }])) {
      let label: unknown;
      try {
        label = this.#p.C_GetAttributeValue(this.#session, object, [{ type: K.CKA_LABEL }])[0]?.value;
      } catch (error) {
        unreadable = error;
        continue;
      }
      if (!Buffer.isBuffer(label)) continue;
      const name = label.toString('utf8');
      index.set(name, [...(index.get(name) ?? []), object]);
    }
    return { index, unreadable };
  }

  #findAll(template: Template): ObjectHandle[] {
    const p = this.#p;
    return this.#tokenObjects(() => {
      p.C_FindObjectsInit(this.#session, template);
      try {
        const out: ObjectHandle[] = [];
        for (;;) {
          const batch = p.C_FindObjects(this.#session, 256);
          out.push(...batch);
          if (batch.length < 256) return out;
        }
      } finally {
        p.C_FindObjectsFinal(this.#session);
      }
    });
  }

  /**
   * Root or KEK by the attribute set; undefined for anything else (a non-sensitive key, or an extractable one —
   * except a root key extractable only under trusted keys, CKA_WRAP_WITH_TRUSTED=true, as trusted-KEK mode makes them).
   */
  #classify(object: ObjectHandle): KeyUsage | undefined {
    const K = pkcs11Lib();
    const types = [K.CKA_KEY_TYPE, K.CKA_SENSITIVE, K.CKA_EXTRACTABLE, K.CKA_WRAP_WITH_TRUSTED, ...FLAG_NAMES.map((f) => K[`CKA_${f}` as const])];
    const values = this.#p.C_GetAttributeValue(this.#session, object, types.map((type) => ({ type })));
    const at = (i: number): Buffer => values[i]?.value ?? Buffer.alloc(0);
    if (ulong(at(0)) !== K.CKK_AES || !bool(at(1))) return undefined;
    const extractable = bool(at(2));
    if (extractable && !bool(at(3))) return undefined;
    const flags = Object.fromEntries(FLAG_NAMES.map((f, i) => [f, bool(at(i + 4))])) as UsageFlags;
    if (sameFlags(flags, ROOT_FLAGS)) return 'root';
    if (extractable) return undefined;
    if (sameFlags(flags, KEK_FLAGS)) return 'kek';
    if (sameFlags(flags, DERIVATION_FLAGS)) return 'derivation';
    return undefined;
  }
}

function trustedModeRefusal(handle: KeyHandle, how: string): CustodyError {
  return new CustodyError(
    'KEK_NOT_TRUSTED',
    `${handle} cannot be ${how} in trusted-KEK mode: only a KEK the Security Officer creates from its clear value is trusted (CKA_TRUSTED); add it with \`joinkeep kek add --key-file\` (an unwrapped KEK can never become trusted)`,
  );
}

/**
 * The template of a secret key kept on the token: root key, KEK or derivation master. `wrapWithTrusted` (trusted-KEK
 * mode) makes a *root* key CKA_EXTRACTABLE=true with CKA_WRAP_WITH_TRUSTED=true: still sensitive (its value cannot be
 * read), but the token will wrap it under a key with CKA_TRUSTED=true — only the Security Officer makes one — and
 * under no other (CKR_KEY_NOT_WRAPPABLE, measured on SoftHSM2 2.6.1). That is what lets `transfer export` seal it
 * to another Join Server (trusted-export.ts). KEKs and derivation masters stay non-extractable in every mode.
 */
export function tokenKeyTemplate(handle: KeyHandle, usage: KeyUsage, createdAt: Date, options: { readonly wrapWithTrusted?: boolean } = {}): Template {
  const K = pkcs11Lib();
  if (usage === 'receiving') throw new CustodyError('INVALID_KEY', `${handle}: a receiving key is an RSA key pair made by createReceivingKey, not a secret key`);
  const exportable = usage === 'root' && options.wrapWithTrusted === true;
  return [
    ...keyObjectHeader(K.CKO_SECRET_KEY, K.CKK_AES, { token: true, private: true }, handle, createdAt),
    { type: K.CKA_SENSITIVE, value: true },
    { type: K.CKA_EXTRACTABLE, value: exportable },
    ...(exportable ? [{ type: K.CKA_WRAP_WITH_TRUSTED, value: true }] : []),
    ...flagAttributes(usage === 'root' ? ROOT_FLAGS : usage === 'kek' ? KEK_FLAGS : DERIVATION_FLAGS),
  ];
}

/** The receiving private key: token or session object, sensitive, UNWRAP only (no DECRYPT, SIGN, SIGN_RECOVER, DERIVE). */
function receivingPrivateTemplate(label: string, createdAt: Date, kind: { readonly token: boolean; readonly extractable: boolean }): Template {
  const K = pkcs11Lib();
  return [
    ...keyObjectHeader(K.CKO_PRIVATE_KEY, K.CKK_RSA, { token: kind.token, private: true }, label, createdAt),
    { type: K.CKA_SENSITIVE, value: true },
    { type: K.CKA_EXTRACTABLE, value: kind.extractable },
    { type: K.CKA_UNWRAP, value: true },
    { type: K.CKA_DECRYPT, value: false },
    { type: K.CKA_SIGN, value: false },
    { type: K.CKA_SIGN_RECOVER, value: false },
    { type: K.CKA_DERIVE, value: false },
  ];
}

/** The receiving key's public half: a public token object that wraps, encrypts and verifies nothing (it is only read). */
function receivingPublicTemplate(label: string, createdAt: Date): Template {
  const K = pkcs11Lib();
  return [
    ...keyObjectHeader(K.CKO_PUBLIC_KEY, K.CKK_RSA, { token: true, private: false }, label, createdAt),
    { type: K.CKA_WRAP, value: false },
    { type: K.CKA_ENCRYPT, value: false },
    { type: K.CKA_VERIFY, value: false },
    { type: K.CKA_VERIFY_RECOVER, value: false },
    { type: K.CKA_DERIVE, value: false },
  ];
}

/** What every key object Joinkeep keeps starts with: class, type, where it lives, and its label, id and date. */
function keyObjectHeader(objectClass: number, keyType: number, where: { readonly token: boolean; readonly private: boolean }, label: string, createdAt: Date): Template {
  const K = pkcs11Lib();
  return [
    { type: K.CKA_CLASS, value: objectClass },
    { type: K.CKA_KEY_TYPE, value: keyType },
    { type: K.CKA_TOKEN, value: where.token },
    { type: K.CKA_PRIVATE, value: where.private },
    { type: K.CKA_LABEL, value: label },
    { type: K.CKA_ID, value: objectId(label, createdAt) },
    { type: K.CKA_START_DATE, value: createdAt.toISOString().slice(0, 10).replaceAll('-', '') },
  ];
}

/** A short-lived AES key of this session (a transport or batch key): private, sensitive, never extractable. */
function ephemeralAesTemplate(flags: UsageFlags): Template {
  const K = pkcs11Lib();
  return [
    { type: K.CKA_CLASS, value: K.CKO_SECRET_KEY },
    { type: K.CKA_KEY_TYPE, value: K.CKK_AES },
    { type: K.CKA_TOKEN, value: false },
    { type: K.CKA_PRIVATE, value: true },
    { type: K.CKA_SENSITIVE, value: true },
    { type: K.CKA_EXTRACTABLE, value: false },
    ...flagAttributes(flags),
  ];
}

/** An unwrap that only checks the envelope: a session object that can do nothing, destroyed at once. */
function probeTemplate(): Template {
  const K = pkcs11Lib();
  return [
    { type: K.CKA_CLASS, value: K.CKO_SECRET_KEY },
    { type: K.CKA_KEY_TYPE, value: K.CKK_GENERIC_SECRET },
    { type: K.CKA_TOKEN, value: false },
    { type: K.CKA_SENSITIVE, value: true },
    { type: K.CKA_EXTRACTABLE, value: false },
    ...flagAttributes(EXPORT_FLAGS),
  ];
}

function flagAttributes(flags: UsageFlags): Template {
  const K = pkcs11Lib();
  return FLAG_NAMES.map((f) => ({ type: K[`CKA_${f}` as const], value: flags[f] }));
}

function sameFlags(a: UsageFlags, b: UsageFlags): boolean {
  return FLAG_NAMES.every((f) => a[f] === b[f]);
}

export function objectId(handle: KeyHandle, createdAt: Date): Buffer {
  const id = Buffer.alloc(ID_HASH_BYTES + 8);
  createHash('sha256').update(handle).digest().copy(id, 0, 0, ID_HASH_BYTES);
  id.writeBigUInt64BE(BigInt(Math.max(0, createdAt.getTime())), ID_HASH_BYTES);
  return id;
}

/** Creation time from CKA_ID; a key made by other tooling (no time in its ID) reads as 1970-01-01. */
function createdAtFromId(handle: KeyHandle, id: Buffer | undefined): Date {
  if (id === undefined || id.length !== ID_HASH_BYTES + 8) return new Date(0);
  if (!id.subarray(0, ID_HASH_BYTES).equals(createHash('sha256').update(handle).digest().subarray(0, ID_HASH_BYTES))) return new Date(0);
  return new Date(Number(id.readBigUInt64BE(ID_HASH_BYTES)));
}

function bool(value: Buffer): boolean {
  return value.length > 0 && value[0] !== 0;
}

/** CK_ULONG in the platform's byte order (4 or 8 bytes). */
function ulong(value: Buffer): number {
  if (value.length === 8) return Number(LE ? value.readBigUInt64LE(0) : value.readBigUInt64BE(0));
  if (value.length === 4) return LE ? value.readUInt32LE(0) : value.readUInt32BE(0);
  return -1;
}

function assertBlock(block: Uint8Array): void {
  if (block.length !== 16) throw new CustodyError('INVALID_KEY', 'a derivation block is 16 bytes');
}
