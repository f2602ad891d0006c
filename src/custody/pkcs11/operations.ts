import { joinAcceptCipherInput } from '../../protocol/index.js';
import { type ExportedKey, type KeyDestination, type KeyHandle, type KeyInfo, type KeyUsage, type OaepHash, type ReceivingKeyInfo, kekHandle } from '../custody.js';
import { CustodyError } from '../errors.js';
import { micEquals } from '../primitives.js';
import type { TokenSession } from './token-session.js';

/*
 * The custody operations as messages between the main thread (Pkcs11KeyCustody) and a worker (worker.ts), and
 * their synchronous execution on a TokenSession inside the worker. Arguments and results are structured-clone
 * values: a Buffer arrives as a plain Uint8Array (see asBuffer), a Date stays a Date.
 */

/** A key as an operation names it: a root key, or the lifetime key derived from it by `derive` (KeyRef). */
export interface OpKey {
  readonly handle: KeyHandle;
  readonly derive: Uint8Array | undefined;
}

export interface Operations {
  verifyMic: { args: OpKey & { message: Uint8Array; mic: Uint8Array }; result: boolean };
  computeMic: { args: OpKey & { message: Uint8Array }; result: Uint8Array };
  ecbDecrypt: { args: OpKey & { data: Uint8Array }; result: Uint8Array };
  deriveAndExport: { args: { root: KeyHandle; requests: readonly { block: Uint8Array; to: KeyDestination }[] }; result: ExportedKey[] };
  /** Accept MIC, accept encryption and session keys of one join (KeyCustody.completeJoin). */
  completeJoin: {
    args: { micKey: OpKey; micInput: Uint8Array; encryptionKey: OpKey; body: Uint8Array; keys: readonly { root: KeyHandle; block: Uint8Array; to: KeyDestination }[] };
    result: { encrypted: Uint8Array; keys: ExportedKey[] };
  };
  unwrapInto: { args: { handle: KeyHandle; usage: KeyUsage; wrapped: Uint8Array; kekLabel: string; createdAt: Date }; result: undefined };
  createKek: { args: { label: string; key: Uint8Array; createdAt: Date }; result: undefined };
  has: { args: { handle: KeyHandle }; result: boolean };
  list: { args: Record<string, never>; result: KeyInfo[] };
  destroy: { args: { handle: KeyHandle }; result: undefined };
  probe: { args: Record<string, never>; result: undefined };
  // Sealed batches: token objects are created only through the custody's serialised lane (pkcs11-custody.ts).
  createReceivingKey: { args: { createdAt: Date }; result: ReceivingKeyInfo };
  /** Pool replication (replicated-custody.ts): the first token makes the key and returns it wrapped under the transport key. */
  createReplicableReceivingKey: { args: { transportKey: Uint8Array; createdAt: Date }; result: { info: ReceivingKeyInfo; wrapped: Uint8Array } };
  importReceivingReplica: { args: { info: ReceivingKeyInfo; wrapped: Uint8Array; transportKey: Uint8Array }; result: undefined };
  receivingKeys: { args: Record<string, never>; result: ReceivingKeyInfo[] };
  checkImport: { args: { from: { handle: KeyHandle; usage: 'receiving' | 'derivation' }; handles: readonly KeyHandle[] }; result: undefined };
  importSealedChunk: {
    args: { receiving: KeyHandle; oaep: OaepHash; encryptedBatchKey: Uint8Array; keys: readonly { handle: KeyHandle; usage: 'root' | 'derivation'; wrapped: Uint8Array }[]; createdAt: Date; checkOnly: boolean };
    result: undefined;
  };
  deriveRootKeys: { args: { master: KeyHandle; keys: readonly { handle: KeyHandle; block: Uint8Array }[]; createdAt: Date }; result: undefined };
  destroyMany: { args: { handles: readonly KeyHandle[] }; result: undefined };
}

export type OperationName = keyof Operations;
export type OperationRequest = { [K in OperationName]: { readonly op: K; readonly args: Operations[K]['args'] } }[OperationName];

/** Main thread → worker: a batch of operations, run in order. `forget` needs no answer (one port keeps order). */
export type ToWorker =
  | { readonly kind: 'run'; readonly jobs: readonly { readonly id: number; readonly request: OperationRequest }[] }
  | { readonly kind: 'forget'; readonly handle: KeyHandle }
  | { readonly kind: 'close' };

/** The answer to one operation. A CustodyError crosses as code + message and is rebuilt on the main thread. */
export type Outcome =
  | { readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly id: number; readonly ok: false; readonly code: string; readonly message: string };

/** Worker → main thread: `done` answers a whole `run` batch at once. */
export type FromWorker =
  | { readonly kind: 'ready'; readonly session: Uint8Array }
  | { readonly kind: 'failed'; readonly code: string; readonly message: string }
  | { readonly kind: 'done'; readonly outcomes: readonly Outcome[] };

/** A structured-cloned Buffer (a plain Uint8Array) as a Buffer again, without copying. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Runs one operation on the worker's token session. Throws CustodyErrors as the software keystore would. */
export function runOperation(token: TokenSession, request: OperationRequest): unknown {
  switch (request.op) {
    case 'verifyMic': {
      const { handle, derive, message, mic } = request.args;
      // The token signs the full 16-byte CMAC; the 4-byte MIC is compared here in constant time (spec-notes §9.1).
      return micEquals(token.cmac(handle, derive, message), mic);
    }
    case 'computeMic': {
      const { handle, derive, message } = request.args;
      return token.cmac(handle, derive, message).subarray(0, 4);
    }
    case 'ecbDecrypt': {
      const { handle, derive, data } = request.args;
      return token.ecbDecrypt(handle, derive, data);
    }
    case 'deriveAndExport':
      return deriveAndExport(token, request.args.root, request.args.requests);
    case 'completeJoin':
      return completeJoin(token, request.args);
    case 'unwrapInto': {
      const { handle, usage, wrapped, kekLabel, createdAt } = request.args;
      token.unwrapInto(handle, usage, wrapped, kekLabel, kekHandle(kekLabel), createdAt);
      return undefined;
    }
    case 'createKek':
      token.createKek(kekHandle(request.args.label), request.args.key, request.args.createdAt);
      return undefined;
    case 'has':
      return token.has(request.args.handle);
    case 'list':
      return token.list();
    case 'destroy':
      token.destroy(request.args.handle);
      return undefined;
    case 'probe':
      token.probe();
      return undefined;
    case 'createReceivingKey':
      return token.generateReceivingKey(request.args.createdAt);
    case 'createReplicableReceivingKey':
      return token.generateReplicableReceivingKey(request.args.transportKey, request.args.createdAt);
    case 'importReceivingReplica': {
      const { info, wrapped, transportKey } = request.args;
      token.importReceivingReplica(info, wrapped, transportKey, info.createdAt);
      return undefined;
    }
    case 'receivingKeys':
      return token.receivingKeys();
    case 'checkImport':
      token.checkImport(request.args.from, request.args.handles);
      return undefined;
    case 'importSealedChunk': {
      const { receiving, oaep, encryptedBatchKey, keys, createdAt, checkOnly } = request.args;
      token.importSealedChunk(receiving, oaep, encryptedBatchKey, keys, createdAt, checkOnly);
      return undefined;
    }
    case 'deriveRootKeys':
      token.deriveRootKeys(request.args.master, request.args.keys, request.args.createdAt);
      return undefined;
    case 'destroyMany':
      token.destroyMany(request.args.handles);
      return undefined;
  }
}

function deriveAndExport(token: TokenSession, root: KeyHandle, requests: readonly { block: Uint8Array; to: KeyDestination }[]): ExportedKey[] {
  // Every refusal before any derivation, in the software keystore's order: root key, then each destination.
  checkExports(token, requests.map((r) => ({ root, to: r.to })));
  return requests.map((r) => exportOne(token, root, r.block, r.to));
}

function completeJoin(token: TokenSession, args: Operations['completeJoin']['args']): Operations['completeJoin']['result'] {
  // Every refusal first, in the order of the separate calls: accept keys, then each root key and destination.
  token.check(args.micKey.handle, 'root');
  token.check(args.encryptionKey.handle, 'root');
  checkExports(token, args.keys);
  const mic = token.cmac(args.micKey.handle, args.micKey.derive, args.micInput).subarray(0, 4);
  const data = joinAcceptCipherInput(args.body, mic);
  if (data.length !== 16 && data.length !== 32) throw new CustodyError('INVALID_KEY', 'a Join-accept to encrypt is 16 or 32 bytes');
  // LoRaWAN 1.1 §6.2.3: the network "encrypts" with AES decrypt so the device only needs AES encrypt.
  const encrypted = token.ecbDecrypt(args.encryptionKey.handle, args.encryptionKey.derive, data);
  return { encrypted, keys: args.keys.map((k) => exportOne(token, k.root, k.block, k.to)) };
}

function checkExports(token: TokenSession, exports: readonly { root: KeyHandle; to: KeyDestination }[]): void {
  const checked = new Set<string>();
  for (const { root, to } of exports) {
    if (!checked.has(root)) {
      token.check(root, 'root');
      checked.add(root);
    }
    if ('kekLabel' in to && !checked.has(kekHandle(to.kekLabel))) {
      token.check(kekHandle(to.kekLabel), 'kek', to.kekLabel);
      checked.add(kekHandle(to.kekLabel));
    }
    if ('clear' in to && to.clear.allowedBy !== 'operator-peer-setting') {
      throw new CustodyError('CLEAR_EXPORT_REFUSED', `clear export to ${to.clear.peer} is not authorised`);
    }
  }
}

function exportOne(token: TokenSession, root: KeyHandle, block: Uint8Array, to: KeyDestination): ExportedKey {
  if ('clear' in to) return { kekLabel: null, key: token.deriveClear(root, block) };
  return { kekLabel: to.kekLabel, key: token.deriveWrapped(root, block, to.kekLabel, kekHandle(to.kekLabel)) };
}
