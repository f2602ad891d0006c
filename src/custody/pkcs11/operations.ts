import { type ExportedKey, type KeyDestination, type KeyHandle, type KeyInfo, type KeyUsage, kekHandle } from '../custody.js';
import { CustodyError } from '../errors.js';
import { micEquals } from '../primitives.js';
import type { TokenSession } from './token-session.js';

/*
 * The custody operations as messages between the main thread (Pkcs11KeyCustody) and a worker (worker.ts), and
 * their synchronous execution on a TokenSession inside the worker. Arguments and results are structured-clone
 * values: a Buffer arrives as a plain Uint8Array (see asBuffer), a Date stays a Date.
 */

export interface Operations {
  verifyMic: { args: { handle: KeyHandle; derive: Uint8Array | undefined; message: Uint8Array; mic: Uint8Array }; result: boolean };
  computeMic: { args: { handle: KeyHandle; derive: Uint8Array | undefined; message: Uint8Array }; result: Uint8Array };
  ecbDecrypt: { args: { handle: KeyHandle; derive: Uint8Array | undefined; data: Uint8Array }; result: Uint8Array };
  deriveAndExport: { args: { root: KeyHandle; requests: readonly { block: Uint8Array; to: KeyDestination }[] }; result: ExportedKey[] };
  unwrapInto: { args: { handle: KeyHandle; usage: KeyUsage; wrapped: Uint8Array; kekLabel: string; createdAt: Date }; result: undefined };
  createKek: { args: { label: string; key: Uint8Array; createdAt: Date }; result: undefined };
  has: { args: { handle: KeyHandle }; result: boolean };
  list: { args: Record<string, never>; result: KeyInfo[] };
  destroy: { args: { handle: KeyHandle }; result: undefined };
  probe: { args: Record<string, never>; result: undefined };
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
  }
}

function deriveAndExport(token: TokenSession, root: KeyHandle, requests: readonly { block: Uint8Array; to: KeyDestination }[]): ExportedKey[] {
  // Every refusal before any derivation, in the software keystore's order: root key, then each destination.
  token.check(root, 'root');
  const checked = new Set<string>();
  for (const r of requests) {
    if ('kekLabel' in r.to && !checked.has(r.to.kekLabel)) {
      token.check(kekHandle(r.to.kekLabel), 'kek', r.to.kekLabel);
      checked.add(r.to.kekLabel);
    }
    if ('clear' in r.to && r.to.clear.allowedBy !== 'operator-peer-setting') {
      throw new CustodyError('CLEAR_EXPORT_REFUSED', `clear export to ${r.to.clear.peer} is not authorised`);
    }
  }
  return requests.map((r) => {
    if ('clear' in r.to) return { kekLabel: null, key: token.deriveClear(root, r.block) };
    return { kekLabel: r.to.kekLabel, key: token.deriveWrapped(root, r.block, r.to.kekLabel, kekHandle(r.to.kekLabel)) };
  });
}
