import type { Worker } from 'node:worker_threads';
import type {
  CompletedJoin,
  ExportedKey,
  HsmCounters,
  JoinAcceptSeal,
  KeyCustody,
  KeyDestination,
  KeyHandle,
  KeyInfo,
  KeyRef,
  KeyUsage,
  SessionKeyRequest,
} from '../custody.js';
import { kekHandle } from '../custody.js';
import { CustodyError } from '../errors.js';
import { readCounters } from './counters.js';
import { type LoadedModule, releaseModule } from './module.js';
import { asBuffer } from './operations.js';
import type { TokenSession } from './token-session.js';
import type { WorkerPool, WorkerPoolOptions } from './worker-pool.js';

export interface Pkcs11CustodyOptions extends WorkerPoolOptions {
  /** Creation time recorded on new token objects (CKA_ID, millisecond resolution; CKA_START_DATE, day). */
  readonly now?: () => Date;
}

/** Set by Pkcs11KeyCustody's static block: reaches the private pool for pkcs11WorkersForTest. */
let workersOf: (custody: Pkcs11KeyCustody) => readonly Worker[];

/**
 * KeyCustody on a PKCS#11 token: root keys and KEKs are token objects (sensitive, non-extractable) and every
 * operation that uses them runs inside the token, on session-object working copies each worker session keeps
 * (token-session.ts); session keys are session objects destroyed within the call that derives them.
 * The semantics — error codes, order of refusals, usage checks, clear-export rule — are the software keystore's.
 *
 * pkcs11js calls are synchronous, so they run in a pool of worker threads (worker-pool.ts), each with its own
 * session; this class checks arguments, sends operations and rebuilds CustodyErrors. The main thread keeps one
 * session of its own (`login`): it holds the process-wide login and initialisation, released once on close after
 * every worker has ended. Today one token is used (the first configured).
 */
export class Pkcs11KeyCustody implements KeyCustody {
  readonly kind = 'pkcs11';
  readonly #module: LoadedModule;
  readonly #login: TokenSession;
  readonly #pool: WorkerPool;
  readonly #now: () => Date;
  #closed: Promise<void> | undefined;

  /** Takes ownership of the module reference, the login session and the pool; use openPkcs11Custody. */
  constructor(module: LoadedModule, login: TokenSession, pool: WorkerPool, options: Pkcs11CustodyOptions = {}) {
    this.#module = module;
    this.#login = login;
    this.#pool = pool;
    this.#now = options.now ?? (() => new Date());
  }

  async verifyMic(ref: KeyRef, message: Uint8Array, mic: Uint8Array): Promise<boolean> {
    // The 4-byte MIC is compared in the worker, in constant time, against the token's full 16-byte CMAC.
    return this.#run('verifyMic', { handle: ref.handle, derive: ref.derive, message, mic });
  }

  async computeMic(ref: KeyRef, message: Uint8Array): Promise<Buffer> {
    return asBuffer(await this.#run('computeMic', { handle: ref.handle, derive: ref.derive, message }));
  }

  async encryptJoinAccept(ref: KeyRef, plaintext: Uint8Array): Promise<Buffer> {
    if (plaintext.length !== 16 && plaintext.length !== 32) {
      throw new CustodyError('INVALID_KEY', 'a Join-accept to encrypt is 16 or 32 bytes');
    }
    // LoRaWAN 1.1 §6.2.3: the network "encrypts" with AES decrypt so the device only needs AES encrypt.
    return asBuffer(await this.#run('ecbDecrypt', { handle: ref.handle, derive: ref.derive, data: plaintext }));
  }

  async completeJoin(accept: JoinAcceptSeal, keys: readonly SessionKeyRequest[]): Promise<CompletedJoin> {
    const { micKey, encryptionKey } = accept;
    const done = await this.#run('completeJoin', {
      micKey: { handle: micKey.handle, derive: micKey.derive },
      micInput: accept.micInput,
      encryptionKey: { handle: encryptionKey.handle, derive: encryptionKey.derive },
      body: accept.body,
      keys,
    });
    return { encrypted: asBuffer(done.encrypted), keys: done.keys.map((e) => ({ kekLabel: e.kekLabel, key: asBuffer(e.key) })) };
  }

  async deriveAndExport(root: KeyHandle, requests: readonly { block: Uint8Array; to: KeyDestination }[]): Promise<ExportedKey[]> {
    const exported = await this.#run('deriveAndExport', { root, requests });
    return exported.map((e) => ({ kekLabel: e.kekLabel, key: asBuffer(e.key) }));
  }

  async importWrapped(handle: KeyHandle, usage: KeyUsage, wrapped: Uint8Array, unwrapWithKekLabel: string): Promise<void> {
    await this.#serialised(() => this.#run('unwrapInto', { handle, usage, wrapped, kekLabel: unwrapWithKekLabel, createdAt: this.#now() }));
  }

  async importKek(label: string, key: Uint8Array): Promise<void> {
    if (key.length !== 16 && key.length !== 24 && key.length !== 32) {
      throw new CustodyError('INVALID_KEY', `KEK "${label}" must be 16, 24 or 32 bytes`);
    }
    await this.#serialised(() => this.#run('createKek', { label, key, createdAt: this.#now() }));
  }

  /*
   * The join engine asks for the peers' KEKs on every join before reserving nonces. Handles never change meaning
   * (KEK labels are not replaced in place; root-key handles carry an import id), so a key seen present stays known
   * until deleteKey — sparing a worker round trip per question on the hot path.
   */
  readonly #present = new Set<KeyHandle>();

  async hasKey(handle: KeyHandle): Promise<boolean> {
    if (this.#present.has(handle)) return true;
    const present = await this.#run('has', { handle });
    if (present) this.#present.add(handle);
    return present;
  }

  async hasKek(label: string): Promise<boolean> {
    return this.hasKey(kekHandle(label));
  }

  async listKeys(): Promise<KeyInfo[]> {
    return this.#run('list', {});
  }

  /** PKCS#11 calls and key objects created/destroyed so far, by every worker and the login session. */
  hsmCounters(): HsmCounters {
    return readCounters([this.#login.counters, ...this.#pool.counters()]);
  }

  async deleteKey(handle: KeyHandle): Promise<void> {
    this.#present.delete(handle);
    try {
      await this.#serialised(() => this.#run('destroy', { handle }));
    } finally {
      // Every other worker drops its cached object handle, so none can use a handle the token may reassign.
      this.#pool.forget(handle);
    }
  }

  /** Health probe through a worker: the token answers and the worker's session is open. */
  async probe(): Promise<void> {
    await this.#run('probe', {});
  }

  /** In-flight operations finish, queued ones are rejected, workers end; then one logout and finalize. */
  close(): Promise<void> {
    return (this.#closed ??= (async () => {
      try {
        await this.#pool.close();
      } finally {
        this.#login.close();
        releaseModule(this.#module);
      }
    })());
  }

  /*
   * Token-object creation and destruction run one at a time. SoftHSM2 2.6.1 sometimes fails C_UnwrapKey into a
   * token object (CKR_GENERAL_ERROR) while another session creates one (reproduced: 200 concurrent imports over
   * 2 workers, 3–4 % failed; none with this lane). Imports are rare, joins are not: crypto stays parallel.
   */
  #writes: Promise<unknown> = Promise.resolve();

  #serialised<T>(operation: () => Promise<T>): Promise<T> {
    const result = this.#writes.then(operation, operation);
    this.#writes = result.catch(() => undefined);
    return result;
  }

  #run: WorkerPool['run'] = (op, args) => {
    if (this.#closed !== undefined) return Promise.reject(new CustodyError('TOKEN_UNAVAILABLE', 'the PKCS#11 custody is closed'));
    return this.#pool.run(op, args);
  };

  static {
    workersOf = (custody) => custody.#pool.workers();
  }
}

/** Test hook: the pool's worker threads, e.g. to end one mid-operation. Not for production code. */
export function pkcs11WorkersForTest(custody: Pkcs11KeyCustody): readonly Worker[] {
  return workersOf(custody);
}
