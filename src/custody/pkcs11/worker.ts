import { parentPort, workerData } from 'node:worker_threads';
import { CustodyError } from '../errors.js';
import { type LoadedModule, acquireModule, releaseModule } from './module.js';
import { type FromWorker, type OperationRequest, type Outcome, type ToWorker, runOperation } from './operations.js';
import { type TokenIdentity, TokenSession } from './token-session.js';

/*
 * One thread of the PKCS#11 pool (worker-pool.ts): its own TokenSession (its own PKCS#11 session) on the token,
 * running one operation at a time, synchronously, off the main thread. The main thread has already initialised the
 * library and logged in, so here C_Initialize / C_Login return ALREADY_INITIALIZED / ALREADY_LOGGED_IN and this
 * thread's module registry never finalizes or logs out (module.ts).
 */

export interface WorkerInit {
  readonly modulePath: string;
  readonly token: TokenIdentity;
  /** This worker's counters (counters.ts), over a SharedArrayBuffer the main thread reads. */
  readonly counters?: Float64Array | undefined;
  readonly workingCopyTtlMs?: number | undefined;
  /** Trusted-KEK mode: session keys that leave wrapped are derived with CKA_WRAP_WITH_TRUSTED=true. */
  readonly wrapWithTrusted?: boolean | undefined;
  /** The pool's lock on the token's objects (token-lock.ts), shared by every worker. */
  readonly objectLock?: SharedArrayBuffer | undefined;
}

/** Longest an answered operation waits for the rest of its batch before its answer is sent. */
const FLUSH_MS = 1;

const port = parentPort;
if (port === null) throw new CustodyError('TOKEN_UNAVAILABLE', 'worker.ts runs only as a worker thread of the PKCS#11 pool');
const init = workerData as WorkerInit;

function post(message: FromWorker): void {
  port!.postMessage(message);
}

let module: LoadedModule | undefined;
let token: TokenSession | undefined;

function shutdown(): void {
  token?.close();
  token = undefined;
  if (module !== undefined) releaseModule(module);
  module = undefined;
  port!.close();
}

try {
  module = acquireModule(init.modulePath);
  token = TokenSession.open(module, init.token, init.counters, { workingCopyTtlMs: init.workingCopyTtlMs, wrapWithTrusted: init.wrapWithTrusted, objectLock: init.objectLock });
  post({ kind: 'ready', session: token.sessionHandle });
} catch (error) {
  const e = error instanceof CustodyError ? error : new CustodyError('TOKEN_UNAVAILABLE', error instanceof Error ? error.message : String(error));
  post({ kind: 'failed', code: e.code, message: e.message });
  shutdown();
}

function run(id: number, request: OperationRequest): Outcome {
  try {
    if (token === undefined) throw new CustodyError('TOKEN_UNAVAILABLE', 'the PKCS#11 worker has no session');
    return { id, ok: true, value: runOperation(token, request) };
  } catch (error) {
    const e = error instanceof CustodyError ? error : new CustodyError('TOKEN_ERROR', `PKCS#11 operation failed: ${error instanceof Error ? error.message : String(error)}`);
    return { id, ok: false, code: e.code, message: e.message };
  }
}

port.on('message', (message: ToWorker) => {
  switch (message.kind) {
    case 'run': {
      // Answers go back at least every FLUSH_MS: a fast token (SoftHSM, ~50 µs a call) answers a batch in one
      // message, a slow one (a network HSM, milliseconds a call) answers each operation as soon as it is done.
      let outcomes: Outcome[] = [];
      let since = performance.now();
      for (const { id, request } of message.jobs) {
        outcomes.push(run(id, request));
        const now = performance.now();
        if (now - since >= FLUSH_MS) {
          post({ kind: 'done', outcomes });
          outcomes = [];
          since = now;
        }
      }
      if (outcomes.length > 0) post({ kind: 'done', outcomes });
      return;
    }
    case 'forget':
      token?.forget(message.handle);
      return;
    case 'close':
      shutdown();
      return;
  }
});
