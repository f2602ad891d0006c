import { type KeyObject, constants, createPrivateKey, createSecretKey, generateKeyPair, privateDecrypt, publicEncrypt, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { joinAcceptCipherInput } from '../../protocol/index.js';
import {
  type CompletedJoin,
  type DerivedImport,
  type ExportedKey,
  type JoinAcceptSeal,
  type JsonWebKeyRsaPublic,
  type KeyCustody,
  type KeyDestination,
  type KeyHandle,
  type KeyInfo,
  type KeyRef,
  type KeyUsage,
  type OaepHash,
  type ReceivingKeyInfo,
  type SealedImport,
  type SessionKeyRequest,
  kekHandle,
  receivingKeyHandle,
} from '../custody.js';
import { CustodyError } from '../errors.js';
import { aes128EcbDecrypt, aes128EcbEncrypt, aesCmac, aesKeyUnwrap, aesKeyWrap, micEquals } from '../primitives.js';
import { RECEIVING_KEY_BITS, RECEIVING_KEY_EXPONENT, receivingKeyJwkOf, recipientPublicKey } from '../receiving-key.js';
import { checkBatchHandles, oaepHashOf } from '../sealed-import.js';
import { openSealedKey, sealKey } from './sealing.js';

const generateKeyPairAsync = promisify(generateKeyPair);

/** One sealed key as the software keystore persists it. */
export interface SealedKeyStoreRecord {
  handle: string;
  usage: KeyUsage;
  sealed: Buffer;
  createdAt: Date;
}

/** Where the software keystore persists sealed keys; the storage layer implements it. */
export interface SealedKeyStore {
  insertKeyRecord(record: SealedKeyStoreRecord): Promise<void>;
  /**
   * Inserts every record in one transaction, or none: when a handle is already held the whole call fails with an
   * error whose `code` is 'KEY_RECORD_EXISTS' (the storage layer's StorageError) and nothing is inserted.
   */
  insertKeyRecords(records: readonly SealedKeyStoreRecord[]): Promise<void>;
  getKeyRecord(handle: string): Promise<SealedKeyStoreRecord | undefined>;
  listKeyRecords(): Promise<{ handle: string; usage: KeyUsage; createdAt: Date }[]>;
  deleteKeyRecord(handle: string): Promise<boolean>;
  /** Deletes the records of `handles` in one transaction; handles not held are ignored. Resolves to the number deleted. */
  deleteKeyRecords(handles: readonly string[]): Promise<number>;
}

/** An opened key, and the lifetime keys derived from it so far (root keys only). */
interface CachedKey {
  readonly key: KeyObject;
  readonly usage: KeyUsage;
  derived?: Map<string, KeyObject>;
}

/** A root key derives two lifetime keys (JSIntKey, JSEncKey); more derivation blocks than this are not kept. */
const MAX_DERIVED_PER_ROOT = 4;

/**
 * The embedded default custody: keys sealed at rest under the master key, opened into KeyObjects
 * (OpenSSL memory, not the JS heap) on first use and cached by handle. Handles never change meaning
 * (root-key handles carry a per-import suffix, KEK labels cannot be re-added), so the cache cannot go stale.
 */
export class SoftwareKeyCustody implements KeyCustody {
  readonly kind = 'software';
  readonly #store: SealedKeyStore;
  readonly #masterKey: Buffer;
  readonly #cache = new Map<KeyHandle, CachedKey>();
  readonly #cacheLimit: number;
  readonly #now: () => Date;

  constructor(store: SealedKeyStore, masterKey: Buffer, options: { cacheLimit?: number; now?: () => Date } = {}) {
    if (masterKey.length !== 32) throw new CustodyError('MASTER_KEY_INVALID', 'master key must be 32 bytes');
    this.#store = store;
    this.#masterKey = Buffer.from(masterKey);
    this.#cacheLimit = options.cacheLimit ?? 100_000;
    this.#now = options.now ?? (() => new Date());
  }

  async verifyMic(ref: KeyRef, message: Uint8Array, mic: Uint8Array): Promise<boolean> {
    return this.#withKey(ref, (key) => micEquals(aesCmac(key, message), mic));
  }

  async computeMic(ref: KeyRef, message: Uint8Array): Promise<Buffer> {
    return this.#withKey(ref, (key) => aesCmac(key, message).subarray(0, 4));
  }

  async encryptJoinAccept(ref: KeyRef, plaintext: Uint8Array): Promise<Buffer> {
    return this.#withKey(ref, (key) => encryptAccept(key, plaintext));
  }

  async deriveAndExport(root: KeyHandle, requests: readonly { block: Uint8Array; to: KeyDestination }[]): Promise<ExportedKey[]> {
    const rootKey = await this.#key(root, 'root');
    const keks = new Map<string, KeyObject>();
    for (const r of requests) {
      if ('kekLabel' in r.to && !keks.has(r.to.kekLabel)) keks.set(r.to.kekLabel, await this.#kek(r.to.kekLabel));
      if ('clear' in r.to && r.to.clear.allowedBy !== 'operator-peer-setting') {
        throw new CustodyError('CLEAR_EXPORT_REFUSED', `clear export to ${r.to.clear.peer} is not authorised`);
      }
    }
    return requests.map((r) => exportDerived(rootKey, r.block, r.to, 'kekLabel' in r.to ? keks.get(r.to.kekLabel) : undefined));
  }

  /*
   * One call per join (the join engine's hot path): every key is looked up first, awaiting only a key that is not
   * cached yet, then the accept and the session keys are computed without a further await.
   */
  async completeJoin(accept: JoinAcceptSeal, keys: readonly SessionKeyRequest[]): Promise<CompletedJoin> {
    // Every refusal first, in the order of the separate calls: accept keys, then each root, KEK and clear export.
    const micRoot = this.#cached(accept.micKey.handle, 'root') ?? (await this.#entry(accept.micKey.handle, 'root'));
    const encryptionRoot = this.#cached(accept.encryptionKey.handle, 'root') ?? (await this.#entry(accept.encryptionKey.handle, 'root'));
    const resolved: { readonly root: KeyObject; readonly kek: KeyObject | undefined; readonly request: SessionKeyRequest }[] = [];
    for (const k of keys) {
      const root = (this.#cached(k.root, 'root') ?? (await this.#entry(k.root, 'root'))).key;
      let kek: KeyObject | undefined;
      if ('kekLabel' in k.to) kek = this.#cachedKek(k.to.kekLabel) ?? (await this.#kek(k.to.kekLabel));
      else if (k.to.clear.allowedBy !== 'operator-peer-setting') throw new CustodyError('CLEAR_EXPORT_REFUSED', `clear export to ${k.to.clear.peer} is not authorised`);
      resolved.push({ root, kek, request: k });
    }
    const mic = aesCmac(this.#derivedKey(micRoot, accept.micKey.derive), accept.micInput).subarray(0, 4);
    const encrypted = encryptAccept(this.#derivedKey(encryptionRoot, accept.encryptionKey.derive), joinAcceptCipherInput(accept.body, mic));
    return { encrypted, keys: resolved.map((r) => exportDerived(r.root, r.request.block, r.request.to, r.kek)) };
  }

  async importWrapped(handle: KeyHandle, usage: KeyUsage, wrapped: Uint8Array, unwrapWithKekLabel: string): Promise<void> {
    if (usage === 'receiving') throw receivingImportRefusal(handle);
    const kek = await this.#kek(unwrapWithKekLabel);
    let key: Buffer;
    try {
      key = aesKeyUnwrap(kek, wrapped);
    } catch {
      throw new CustodyError('UNWRAP_FAILED', `the key for ${handle} does not unwrap under KEK "${unwrapWithKekLabel}" (wrong KEK or corrupted envelope)`);
    }
    try {
      const sizes = usage === 'kek' ? [16, 24, 32] : [16];
      if (!sizes.includes(key.length)) throw new CustodyError('INVALID_KEY', `the key for ${handle} unwrapped to ${key.length} bytes; ${usage === 'kek' ? 'a KEK is 16, 24 or 32' : usage === 'root' ? 'LoRaWAN root keys are 16' : 'a derivation master key is 16'} bytes`);
      await this.#insert(handle, usage, key);
    } finally {
      key.fill(0);
    }
  }

  async importKek(label: string, key: Uint8Array): Promise<void> {
    if (key.length !== 16 && key.length !== 24 && key.length !== 32) {
      throw new CustodyError('INVALID_KEY', `KEK "${label}" must be 16, 24 or 32 bytes`);
    }
    await this.#insert(kekHandle(label), 'kek', key);
  }

  /**
   * Moving to another custody (`joinkeep custody migrate`): the key leaves wrapped (RFC 3394) under a one-time
   * transport KEK that the caller also creates in the destination, never in clear. Software keystore only.
   */
  async wrapForTransfer(handle: KeyHandle, transportKek: Uint8Array): Promise<{ usage: KeyUsage; wrapped: Buffer }> {
    const entry = this.#cache.get(handle) ?? (await this.#open(handle));
    if (entry.usage === 'receiving') {
      // An RSA private key is not an AES key to wrap, and a new custody makes its own: publish the new key's JWK.
      throw new CustodyError('EXPORT_REFUSED', `${handle} is a receiving key: it is not moved to another custody; create a new receiving key there and publish its JWK`);
    }
    const raw = entry.key.export();
    try {
      return { usage: entry.usage, wrapped: aesKeyWrap(transportKek, raw) };
    } finally {
      raw.fill(0);
    }
  }

  async hasKey(handle: KeyHandle): Promise<boolean> {
    return this.#cache.has(handle) || (await this.#store.getKeyRecord(handle)) !== undefined;
  }

  async hasKek(label: string): Promise<boolean> {
    return this.hasKey(kekHandle(label));
  }

  async listKeys(): Promise<KeyInfo[]> {
    return (await this.#store.listKeyRecords()).map((r) => ({
      handle: r.handle,
      usage: r.usage,
      createdAt: r.createdAt,
      location: 'software keystore',
      attributes: { sealedAtRestAes256Gcm: true },
    }));
  }

  async deleteKey(handle: KeyHandle): Promise<void> {
    this.#cache.delete(handle);
    await this.#store.deleteKeyRecord(handle);
  }

  async deleteKeys(handles: readonly KeyHandle[]): Promise<void> {
    for (const handle of handles) this.#cache.delete(handle);
    if (handles.length > 0) await this.#store.deleteKeyRecords(handles);
  }

  // --- Sealed batches ----------------------------------------------------------------------------------------

  async createReceivingKey(): Promise<ReceivingKeyInfo> {
    const { privateKey } = await generateKeyPairAsync('rsa', { modulusLength: RECEIVING_KEY_BITS, publicExponent: RECEIVING_KEY_EXPONENT });
    const jwk = receivingKeyJwkOf(privateKey);
    const createdAt = this.#now();
    // PKCS#8 DER, sealed under the master key like every other key; the clear encoding is zeroised at once.
    const der = privateKey.export({ format: 'der', type: 'pkcs8' });
    try {
      await this.#insert(receivingKeyHandle(jwk.kid), 'receiving', der, createdAt);
    } finally {
      der.fill(0);
    }
    return { kid: jwk.kid, jwk, createdAt };
  }

  async listReceivingKeys(): Promise<ReceivingKeyInfo[]> {
    const out: ReceivingKeyInfo[] = [];
    for (const record of await this.#store.listKeyRecords()) {
      if (record.usage !== 'receiving') continue;
      const jwk = receivingKeyJwkOf(await this.#key(record.handle, 'receiving'));
      // The handle names the key by its thumbprint; a record under another name was not made by createReceivingKey.
      if (record.handle !== receivingKeyHandle(jwk.kid)) throw new CustodyError('SEALED_RECORD_CORRUPT', `${record.handle} holds the receiving key ${jwk.kid}`);
      out.push({ kid: jwk.kid, jwk, createdAt: record.createdAt });
    }
    return out.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
  }

  async importSealed(input: SealedImport): Promise<void> {
    // The input first, then custody: the same order of refusals as the PKCS#11 custody's.
    const oaepHash = oaepHashOf(input.batchKey.oaep);
    checkBatchHandles(input.keys);
    const receiving = await this.#receiving(input.receivingKid);
    const batchKey = openBatchKey(receiving, oaepHash, input.batchKey.encrypted, input.receivingKid);
    const createdAt = this.#now();
    let records: SealedKeyStoreRecord[];
    try {
      records = input.keys.map(({ handle, usage, wrapped }) => {
        let key: Buffer;
        try {
          key = aesKeyUnwrap(batchKey, wrapped);
        } catch {
          throw new CustodyError('UNWRAP_FAILED', `the key for ${handle} does not unwrap under the batch key (corrupted or truncated envelope, or sealed under another batch key); nothing was imported`);
        }
        try {
          if (key.length !== 16) throw new CustodyError('INVALID_KEY', `the key for ${handle} unwrapped to ${key.length} bytes; ${usage === 'root' ? 'LoRaWAN root keys are' : 'a derivation master key is'} 16 bytes; nothing was imported`);
          return { handle, usage, sealed: sealKey(this.#masterKey, handle, usage, key), createdAt };
        } finally {
          key.fill(0);
        }
      });
    } finally {
      batchKey.fill(0);
    }
    await this.#insertAll(records);
  }

  async importDerived(input: DerivedImport): Promise<void> {
    for (const k of input.keys) if (k.block.length !== 16) throw new CustodyError('INVALID_KEY', `${k.handle}: a derivation block is 16 bytes`);
    checkBatchHandles(input.keys.map((k) => ({ handle: k.handle, usage: 'root' })));
    const master = await this.#key(input.master, 'derivation');
    const createdAt = this.#now();
    const records = input.keys.map(({ handle, block }): SealedKeyStoreRecord => {
      // JK-KDF-1: one AES-128 encryption of the block under the master key (docs/specs/sealed-batch.md).
      const key = aes128EcbEncrypt(master, block);
      try {
        return { handle, usage: 'root', sealed: sealKey(this.#masterKey, handle, 'root', key), createdAt };
      } finally {
        key.fill(0);
      }
    });
    await this.#insertAll(records);
  }

  async exportSealed(recipient: JsonWebKeyRsaPublic, oaep: OaepHash, handles: readonly KeyHandle[]): Promise<{ encryptedBatchKey: Buffer; wrapped: Buffer[] }> {
    const publicKey = recipientPublicKey(recipient);
    const oaepHash = oaepHashOf(oaep);
    // Every refusal before any work: each handle must name a root key.
    const keys: KeyObject[] = [];
    for (const handle of handles) keys.push(await this.#key(handle, 'root'));
    const batchKey = randomBytes(32);
    try {
      const encryptedBatchKey = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, batchKey);
      const wrapped = keys.map((key) => {
        const raw = key.export();
        try {
          return aesKeyWrap(batchKey, raw);
        } finally {
          raw.fill(0);
        }
      });
      return { encryptedBatchKey, wrapped };
    } finally {
      batchKey.fill(0);
    }
  }

  async close(): Promise<void> {
    this.#cache.clear();
    this.#masterKey.fill(0);
  }

  async #insert(handle: KeyHandle, usage: KeyUsage, key: Uint8Array, createdAt: Date = this.#now()): Promise<void> {
    if (await this.#store.getKeyRecord(handle)) throw new CustodyError('KEY_EXISTS', `a key named ${handle} already exists`);
    await this.#store.insertKeyRecord({ handle, usage, sealed: sealKey(this.#masterKey, handle, usage, key), createdAt });
  }

  /** All records in one storage call (one transaction), or none. */
  async #insertAll(records: readonly SealedKeyStoreRecord[]): Promise<void> {
    if (records.length === 0) return;
    try {
      await this.#store.insertKeyRecords(records);
    } catch (error) {
      if ((error as { code?: unknown } | null)?.code === 'KEY_RECORD_EXISTS') {
        throw new CustodyError('KEY_EXISTS', `${error instanceof Error ? error.message : 'a key of the batch already exists'}; nothing was imported`);
      }
      throw error;
    }
  }

  async #receiving(kid: string): Promise<KeyObject> {
    try {
      return await this.#key(receivingKeyHandle(kid), 'receiving');
    } catch (error) {
      if (error instanceof CustodyError && error.code === 'KEY_NOT_FOUND') throw new CustodyError('KEY_NOT_FOUND', `no receiving key with kid ${kid} in this custody (${error.message})`);
      throw error;
    }
  }

  async #withKey<T>(ref: KeyRef, use: (key: KeyObject) => T): Promise<T> {
    return use(this.#derivedKey(this.#cached(ref.handle, 'root') ?? (await this.#entry(ref.handle, 'root')), ref.derive));
  }

  /**
   * The root key itself, or the key derived from it with `derive`. Lifetime keys (LoRaWAN 1.1 JSIntKey, JSEncKey)
   * depend only on the root key and the DevEUI, so every join of a device derives the same ones: they are kept as
   * KeyObjects beside their root key and leave the cache with it.
   */
  #derivedKey(entry: CachedKey, derive: Uint8Array | undefined): KeyObject {
    if (derive === undefined) return entry.key;
    assertBlock(derive);
    const id = Buffer.from(derive).toString('hex');
    let derived = entry.derived?.get(id);
    if (derived === undefined) {
      const raw = aes128EcbEncrypt(entry.key, derive);
      try {
        derived = createSecretKey(raw);
      } finally {
        raw.fill(0);
      }
      const kept = (entry.derived ??= new Map());
      if (kept.size >= MAX_DERIVED_PER_ROOT) kept.delete(kept.keys().next().value as string);
      kept.set(id, derived);
    }
    return derived;
  }

  /** A cached KEK, with #kek's refusal for a handle that holds another kind of key; undefined when not cached. */
  #cachedKek(label: string): KeyObject | undefined {
    try {
      return this.#cached(kekHandle(label), 'kek')?.key;
    } catch (e) {
      if (e instanceof CustodyError && e.code === 'KEY_NOT_FOUND') throw kekNotFound(label);
      throw e;
    }
  }

  #kek(label: string): Promise<KeyObject> {
    return this.#key(kekHandle(label), 'kek').catch((e: unknown) => {
      if (e instanceof CustodyError && e.code === 'KEY_NOT_FOUND') throw kekNotFound(label);
      throw e;
    });
  }

  async #key(handle: KeyHandle, usage: KeyUsage): Promise<KeyObject> {
    return (await this.#entry(handle, usage)).key;
  }

  async #entry(handle: KeyHandle, usage: KeyUsage): Promise<CachedKey> {
    return this.#cached(handle, usage) ?? checkUsage(handle, usage, await this.#open(handle));
  }

  /** The cached key, checked for its usage; undefined when not cached. No await: the join path's keys are cached. */
  #cached(handle: KeyHandle, usage: KeyUsage): CachedKey | undefined {
    const cached = this.#cache.get(handle);
    return cached === undefined ? undefined : checkUsage(handle, usage, cached);
  }

  async #open(handle: KeyHandle): Promise<CachedKey> {
    const record = await this.#store.getKeyRecord(handle);
    if (!record) throw new CustodyError('KEY_NOT_FOUND', `no key named ${handle}`);
    const usage = record.usage;
    const raw = openSealedKey(this.#masterKey, handle, usage, record.sealed);
    let key: KeyObject;
    try {
      // A receiving key is sealed as its PKCS#8 DER encoding; every other key is an AES key.
      key = usage === 'receiving' ? createPrivateKey({ key: raw, format: 'der', type: 'pkcs8' }) : createSecretKey(raw);
    } finally {
      raw.fill(0);
    }
    if (this.#cache.size >= this.#cacheLimit) this.#cache.delete(this.#cache.keys().next().value as KeyHandle);
    const entry: CachedKey = { key, usage };
    this.#cache.set(handle, entry);
    return entry;
  }
}

/** RSA-OAEP decryption of the batch key; any failure, and a key that is not AES-256, reads as UNWRAP_FAILED. */
function openBatchKey(receiving: KeyObject, oaepHash: 'sha1' | 'sha256', encrypted: Uint8Array, kid: string): Buffer {
  const refused = (): CustodyError =>
    new CustodyError('UNWRAP_FAILED', `the batch key does not decrypt with receiving key ${kid} (sealed to another key, another OAEP hash, or corrupted); nothing was imported`);
  let key: Buffer;
  try {
    key = privateDecrypt({ key: receiving, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash }, encrypted);
  } catch {
    throw refused();
  }
  if (key.length !== 32) {
    key.fill(0);
    throw refused();
  }
  return key;
}

function receivingImportRefusal(handle: KeyHandle): CustodyError {
  return new CustodyError('INVALID_KEY', `${handle}: a receiving key is created in custody (createReceivingKey), never imported`);
}

function kekNotFound(label: string): CustodyError {
  return new CustodyError('KEK_NOT_FOUND', `no KEK labelled "${label}"; add it with \`joinkeep kek add\``);
}

/** Usage is checked on every use, cached or not: a KEK never MACs, encrypts or derives as a root key. */
function checkUsage(handle: KeyHandle, usage: KeyUsage, entry: CachedKey): CachedKey {
  if (entry.usage !== usage) throw new CustodyError('KEY_NOT_FOUND', `${handle} is a ${entry.usage} key, not a ${usage} key`);
  return entry;
}

/** LoRaWAN 1.1 §6.2.3: the network "encrypts" a Join-accept with AES decrypt, so the device only needs AES encrypt. */
function encryptAccept(key: KeyObject, plaintext: Uint8Array): Buffer {
  if (plaintext.length !== 16 && plaintext.length !== 32) {
    throw new CustodyError('INVALID_KEY', 'a Join-accept to encrypt is 16 or 32 bytes');
  }
  return aes128EcbDecrypt(key, plaintext);
}

/** A session key derived from `root` with `block`, wrapped under `kek`, or in clear for an authorised clear export. */
function exportDerived(root: KeyObject, block: Uint8Array, to: KeyDestination, kek: KeyObject | undefined): ExportedKey {
  assertBlock(block);
  const derived = aes128EcbEncrypt(root, block);
  if ('clear' in to) return { kekLabel: null, key: derived };
  try {
    return { kekLabel: to.kekLabel, key: aesKeyWrap(kek!, derived) };
  } finally {
    derived.fill(0);
  }
}

function assertBlock(block: Uint8Array): void {
  if (block.length !== 16) throw new CustodyError('INVALID_KEY', 'a derivation block is 16 bytes');
}
