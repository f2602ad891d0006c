import type { Worker } from 'node:worker_threads';
import type {
  CompletedJoin,
  DerivedImport,
  ExportedKey,
  HsmCounters,
  JoinAcceptSeal,
  JsonWebKeyRsaPublic,
  KeyCustody,
  KeyDestination,
  KeyHandle,
  KeyInfo,
  KeyRef,
  KeyUsage,
  OaepHash,
  ReceivingKeyInfo,
  SealedImport,
  SessionKeyRequest,
} from '../custody.js';
import { kekHandle, receivingKeyHandle } from '../custody.js';
import { CustodyError } from '../errors.js';
import { recipientPublicKey } from '../receiving-key.js';
import type { ReceivingKeyReplication } from '../replicated-custody.js';
import { checkBatchHandles, chunked, oaepHashOf } from '../sealed-import.js';
import { readCounters } from './counters.js';
import { type LoadedModule, releaseModule } from './module.js';
import { asBuffer } from './operations.js';
import type { TokenSession } from './token-session.js';
import type { WorkerPool, WorkerPoolOptions } from './worker-pool.js';

export interface Pkcs11CustodyOptions extends WorkerPoolOptions {
  /** Creation time recorded on new token objects (CKA_ID, millisecond resolution; CKA_START_DATE, day). */
  readonly now?: () => Date;
  /** Keys a worker imports (or derives) per operation in importSealed / importDerived (default 256). */
  readonly importChunkSize?: number | undefined;
}

export const DEFAULT_IMPORT_CHUNK_SIZE = 256;

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
export class Pkcs11KeyCustody implements KeyCustody, ReceivingKeyReplication {
  readonly kind = 'pkcs11';
  readonly #module: LoadedModule;
  readonly #login: TokenSession;
  readonly #pool: WorkerPool;
  readonly #now: () => Date;
  readonly #chunkSize: number;
  readonly #trustedKeks: boolean;
  #closed: Promise<void> | undefined;

  /** Takes ownership of the module reference, the login session and the pool; use openPkcs11Custody. */
  constructor(module: LoadedModule, login: TokenSession, pool: WorkerPool, options: Pkcs11CustodyOptions = {}) {
    this.#module = module;
    this.#login = login;
    this.#pool = pool;
    this.#now = options.now ?? (() => new Date());
    const chunkSize = options.importChunkSize ?? DEFAULT_IMPORT_CHUNK_SIZE;
    if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new CustodyError('TOKEN_UNAVAILABLE', `the import chunk size must be a positive integer, not ${chunkSize}`);
    this.#chunkSize = chunkSize;
    this.#trustedKeks = options.trustedKeks === true;
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
    if (usage === 'receiving') throw new CustodyError('INVALID_KEY', `${handle}: a receiving key is created in custody (createReceivingKey), never imported`);
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

  async deleteKeys(handles: readonly KeyHandle[]): Promise<void> {
    if (handles.length === 0) return;
    for (const handle of handles) this.#present.delete(handle);
    try {
      await this.#serialised(() => this.#run('destroyMany', { handles }));
    } finally {
      for (const handle of handles) this.#pool.forget(handle);
    }
  }

  // --- Sealed batches ----------------------------------------------------------------------------------------

  async createReceivingKey(): Promise<ReceivingKeyInfo> {
    return this.#serialised(() => this.#run('createReceivingKey', { createdAt: this.#now() }));
  }

  /** Pool replication, first token (replicated-custody.ts): see TokenSession.generateReplicableReceivingKey. */
  async createReplicableReceivingKey(transportKey: Uint8Array): Promise<{ info: ReceivingKeyInfo; wrapped: Buffer }> {
    const made = await this.#serialised(() => this.#run('createReplicableReceivingKey', { transportKey, createdAt: this.#now() }));
    return { info: made.info, wrapped: asBuffer(made.wrapped) };
  }

  /** Pool replication, every other token: see TokenSession.importReceivingReplica. */
  async importReceivingReplica(info: ReceivingKeyInfo, wrapped: Uint8Array, transportKey: Uint8Array): Promise<void> {
    await this.#serialised(() => this.#run('importReceivingReplica', { info, wrapped, transportKey }));
  }

  async listReceivingKeys(): Promise<ReceivingKeyInfo[]> {
    return this.#run('receivingKeys', {});
  }

  /**
   * The batch key is unwrapped (RSA-OAEP) inside the token and each key straight into a token object: no key is in
   * clear in this process. Work goes to a worker in chunks (importChunkSize keys per operation, each chunk unwrapping
   * the batch key again), one import at a time with every other token-object creation. Every envelope is checked
   * first (unwrapped into a session object that can do nothing, destroyed at once: tens of µs a key, where a token
   * object costs milliseconds on SoftHSM2), so a bad batch creates no token object; what a token failure leaves
   * half-done is removed again.
   */
  async importSealed(input: SealedImport): Promise<void> {
    const oaep = input.batchKey.oaep;
    oaepHashOf(oaep);
    checkBatchHandles(input.keys);
    const receiving = receivingKeyHandle(input.receivingKid);
    await this.#serialised(async () => {
      await this.#run('checkImport', { from: { handle: receiving, usage: 'receiving' }, handles: input.keys.map((k) => k.handle) });
      const createdAt = this.#now();
      const encryptedBatchKey = input.batchKey.encrypted;
      const chunks = chunked(input.keys.map(({ handle, usage, wrapped }) => ({ handle, usage, wrapped })), this.#chunkSize);
      // At least once: even an empty import proves the batch key opens (which is how the OAEP hash is probed).
      for (const keys of chunks.length > 0 ? chunks : [[]]) await this.#run('importSealedChunk', { receiving, oaep, encryptedBatchKey, keys, createdAt, checkOnly: true });
      await this.#inChunks(chunks, (keys) => this.#run('importSealedChunk', { receiving, oaep, encryptedBatchKey, keys, createdAt, checkOnly: false }));
    });
  }

  async importDerived(input: DerivedImport): Promise<void> {
    for (const k of input.keys) if (k.block.length !== 16) throw new CustodyError('INVALID_KEY', `${k.handle}: a derivation block is 16 bytes`);
    checkBatchHandles(input.keys.map((k) => ({ handle: k.handle, usage: 'root' })));
    await this.#serialised(async () => {
      await this.#run('checkImport', { from: { handle: input.master, usage: 'derivation' }, handles: input.keys.map((k) => k.handle) });
      const createdAt = this.#now();
      const chunks = chunked(input.keys.map(({ handle, block }) => ({ handle, block })), this.#chunkSize);
      await this.#inChunks(chunks, (keys) => this.#run('deriveRootKeys', { master: input.master, keys, createdAt }));
    });
  }

  /**
   * Refused here in every mode. Outside trusted-KEK mode root keys are not extractable, so the token cannot wrap them
   * under any key. In trusted-KEK mode they can be wrapped, but only under a key the Security Officer made trusted,
   * and an SO login would log this custody out of every session: the export runs before the custody is opened, in
   * `joinkeep transfer export` (trusted-export.ts, exportSealedTrusted).
   */
  async exportSealed(recipient: JsonWebKeyRsaPublic, oaep: OaepHash, _handles: readonly KeyHandle[]): Promise<{ encryptedBatchKey: Buffer; wrapped: Buffer[] }> {
    // The request is checked as the software keystore checks it, so that a bad recipient reads the same everywhere.
    recipientPublicKey(recipient);
    oaepHashOf(oaep);
    if (this.#trustedKeks) {
      throw new CustodyError(
        'EXPORT_REFUSED',
        'in trusted-KEK mode root keys leave the token only wrapped under a batch key the Security Officer makes trusted, which cannot happen while this custody is open (the SO login would log it out): ' +
          'use `joinkeep transfer export`, which does the Security Officer part before opening the data directory',
      );
    }
    throw new CustodyError(
      'EXPORT_REFUSED',
      'root keys in PKCS#11 custody are not extractable (CKA_EXTRACTABLE=false), so they cannot leave the token, not even sealed to another Join Server. ' +
        'Join-Server-to-Join-Server export from an HSM needs trusted-KEK mode (`joinkeep init --trusted-keks`), where root keys are imported for trusted wrapping ' +
        '(CKA_EXTRACTABLE=true with CKA_WRAP_WITH_TRUSTED=true: wrapped only under a key the Security Officer made trusted); keys imported here stay where they are: export from a software keystore or a trusted-mode data directory instead',
    );
  }

  /** Runs `run` on each chunk in turn; when one fails, removes what the earlier chunks created. */
  async #inChunks<T extends { readonly handle: KeyHandle }>(chunks: readonly T[][], run: (chunk: T[]) => Promise<unknown>): Promise<void> {
    const done: KeyHandle[] = [];
    try {
      for (const chunk of chunks) {
        await run(chunk);
        done.push(...chunk.map((k) => k.handle));
      }
    } catch (error) {
      if (done.length === 0) throw error;
      try {
        await this.#run('destroyMany', { handles: done });
      } catch (undo) {
        throw new CustodyError(
          'TOKEN_ERROR',
          `${describe(error)}; and the ${done.length} key(s) imported before it could not be removed again (${describe(undo)}): delete them by hand, e.g. ${done.slice(0, 3).join(', ')}`,
        );
      } finally {
        for (const handle of done) this.#pool.forget(handle);
      }
      throw error;
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

function describe(error: unknown): string {
  if (error instanceof CustodyError) return `${error.code}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}

/** Test hook: the pool's worker threads, e.g. to end one mid-operation. Not for production code. */
export function pkcs11WorkersForTest(custody: Pkcs11KeyCustody): readonly Worker[] {
  return workersOf(custody);
}
