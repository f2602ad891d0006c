import { type KeyObject, createSecretKey } from 'node:crypto';
import { joinAcceptCipherInput } from '../../protocol/index.js';
import {
  type CompletedJoin,
  type ExportedKey,
  type JoinAcceptSeal,
  type KeyCustody,
  type KeyDestination,
  type KeyHandle,
  type KeyInfo,
  type KeyRef,
  type KeyUsage,
  type SessionKeyRequest,
  kekHandle,
} from '../custody.js';
import { CustodyError } from '../errors.js';
import { aes128EcbDecrypt, aes128EcbEncrypt, aesCmac, aesKeyUnwrap, aesKeyWrap, micEquals } from '../primitives.js';
import { openSealedKey, sealKey } from './sealing.js';

/** Where the software keystore persists sealed keys; the storage layer implements it. */
export interface SealedKeyStore {
  insertKeyRecord(record: { handle: string; usage: KeyUsage; sealed: Buffer; createdAt: Date }): Promise<void>;
  getKeyRecord(handle: string): Promise<{ handle: string; usage: KeyUsage; sealed: Buffer; createdAt: Date } | undefined>;
  listKeyRecords(): Promise<{ handle: string; usage: KeyUsage; createdAt: Date }[]>;
  deleteKeyRecord(handle: string): Promise<boolean>;
}

/**
 * The embedded default custody: keys sealed at rest under the master key, opened into KeyObjects
 * (OpenSSL memory, not the JS heap) on first use and cached by handle. Handles never change meaning
 * (root-key handles carry a per-import suffix, KEK labels cannot be re-added), so the cache cannot go stale.
 */
export class SoftwareKeyCustody implements KeyCustody {
  readonly kind = 'software';
  readonly #store: SealedKeyStore;
  readonly #masterKey: Buffer;
  readonly #cache = new Map<KeyHandle, { readonly key: KeyObject; readonly usage: KeyUsage }>();
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
    if (plaintext.length !== 16 && plaintext.length !== 32) {
      throw new CustodyError('INVALID_KEY', 'a Join-accept to encrypt is 16 or 32 bytes');
    }
    // LoRaWAN 1.1 §6.2.3: the network "encrypts" with AES decrypt so the device only needs AES encrypt.
    return this.#withKey(ref, (key) => aes128EcbDecrypt(key, plaintext));
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
    return requests.map((r) => {
      assertBlock(r.block);
      const derived = aes128EcbEncrypt(rootKey, r.block);
      if ('clear' in r.to) return { kekLabel: null, key: derived };
      try {
        return { kekLabel: r.to.kekLabel, key: aesKeyWrap(keks.get(r.to.kekLabel)!, derived) };
      } finally {
        derived.fill(0);
      }
    });
  }

  async completeJoin(accept: JoinAcceptSeal, keys: readonly SessionKeyRequest[]): Promise<CompletedJoin> {
    // Every refusal first, in the order of the separate calls: accept keys, then each root, KEK and clear export.
    await this.#key(accept.micKey.handle, 'root');
    await this.#key(accept.encryptionKey.handle, 'root');
    for (const k of keys) {
      await this.#key(k.root, 'root');
      if ('kekLabel' in k.to) await this.#kek(k.to.kekLabel);
      else if (k.to.clear.allowedBy !== 'operator-peer-setting') throw new CustodyError('CLEAR_EXPORT_REFUSED', `clear export to ${k.to.clear.peer} is not authorised`);
    }
    const mic = await this.computeMic(accept.micKey, accept.micInput);
    const encrypted = await this.encryptJoinAccept(accept.encryptionKey, joinAcceptCipherInput(accept.body, mic));
    const exported: ExportedKey[] = [];
    for (const k of keys) exported.push(...(await this.deriveAndExport(k.root, [{ block: k.block, to: k.to }])));
    return { encrypted, keys: exported };
  }

  async importWrapped(handle: KeyHandle, usage: KeyUsage, wrapped: Uint8Array, unwrapWithKekLabel: string): Promise<void> {
    const kek = await this.#kek(unwrapWithKekLabel);
    let key: Buffer;
    try {
      key = aesKeyUnwrap(kek, wrapped);
    } catch {
      throw new CustodyError('UNWRAP_FAILED', `the key for ${handle} does not unwrap under KEK "${unwrapWithKekLabel}" (wrong KEK or corrupted envelope)`);
    }
    try {
      const sizes = usage === 'kek' ? [16, 24, 32] : [16];
      if (!sizes.includes(key.length)) throw new CustodyError('INVALID_KEY', `the key for ${handle} unwrapped to ${key.length} bytes; ${usage === 'kek' ? 'a KEK is 16, 24 or 32' : 'LoRaWAN root keys are 16'} bytes`);
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

  async close(): Promise<void> {
    this.#cache.clear();
    this.#masterKey.fill(0);
  }

  async #insert(handle: KeyHandle, usage: KeyUsage, key: Uint8Array): Promise<void> {
    if (await this.#store.getKeyRecord(handle)) throw new CustodyError('KEY_EXISTS', `a key named ${handle} already exists`);
    await this.#store.insertKeyRecord({ handle, usage, sealed: sealKey(this.#masterKey, handle, usage, key), createdAt: this.#now() });
  }

  async #withKey<T>(ref: KeyRef, use: (key: KeyObject | Buffer) => T): Promise<T> {
    const root = await this.#key(ref.handle, 'root');
    if (ref.derive === undefined) return use(root);
    assertBlock(ref.derive);
    const derived = aes128EcbEncrypt(root, ref.derive);
    try {
      return use(derived);
    } finally {
      derived.fill(0);
    }
  }

  #kek(label: string): Promise<KeyObject> {
    return this.#key(kekHandle(label), 'kek').catch((e: unknown) => {
      if (e instanceof CustodyError && e.code === 'KEY_NOT_FOUND') throw new CustodyError('KEK_NOT_FOUND', `no KEK labelled "${label}"; add it with \`joinkeep kek add\``);
      throw e;
    });
  }

  async #key(handle: KeyHandle, usage: KeyUsage): Promise<KeyObject> {
    const cached = this.#cache.get(handle) ?? (await this.#open(handle));
    // Usage is checked on every use, cached or not: a KEK never MACs, encrypts or derives as a root key.
    if (cached.usage !== usage) throw new CustodyError('KEY_NOT_FOUND', `${handle} is a ${cached.usage} key, not a ${usage} key`);
    return cached.key;
  }

  async #open(handle: KeyHandle): Promise<{ key: KeyObject; usage: KeyUsage }> {
    const record = await this.#store.getKeyRecord(handle);
    if (!record) throw new CustodyError('KEY_NOT_FOUND', `no key named ${handle}`);
    const usage = record.usage;
    const raw = openSealedKey(this.#masterKey, handle, usage, record.sealed);
    const key = createSecretKey(raw);
    raw.fill(0);
    if (this.#cache.size >= this.#cacheLimit) this.#cache.delete(this.#cache.keys().next().value as KeyHandle);
    const entry = { key, usage };
    this.#cache.set(handle, entry);
    return entry;
  }
}

function assertBlock(block: Uint8Array): void {
  if (block.length !== 16) throw new CustodyError('INVALID_KEY', 'a derivation block is 16 bytes');
}
