import { Worker } from 'node:worker_threads';
import { CustodyError, type CustodyErrorCode, custodyErrorCodes } from '../errors.js';
import { newCounterArray } from './counters.js';
import type { LoadedModule } from './module.js';
import { type FromWorker, type OperationName, type OperationRequest, type Operations, type ToWorker } from './operations.js';
import { TokenLock } from './token-lock.js';
import type { WorkerInit } from './worker.js';

/*
 * A fixed pool of worker threads, each with its own session on the token (worker.ts), so that synchronous pkcs11js
 * calls — milliseconds each on a network HSM — never block the event loop. An operation goes straight to an idle
 * worker; when all are busy it waits in one bounded FIFO queue, and a worker that becomes idle takes the oldest
 * queued operations, up to maxBatch at once. When every worker is busy and the queue is full, an operation fails at
 * once with OVERLOADED (the join engine answers it with a TS002 failure rather than letting latency grow unbounded).
 *
 * A worker that dies (uncaught exception, exit, terminate) fails its in-flight operations with TOKEN_ERROR, its
 * orphaned PKCS#11 session is closed from this thread, and a replacement is started. close() lets in-flight
 * operations finish, rejects queued ones and ends every worker; the caller then logs out and finalizes once.
 */

export interface WorkerPoolOptions {
  /** Worker threads (default 2: the cores of the target machine). */
  readonly workers?: number | undefined;
  /** Operations that may wait for a worker before new ones are refused with OVERLOADED (default 1024). */
  readonly maxQueue?: number | undefined;
  /**
   * The most queued operations an idle worker takes in one message (default 16). Under load this saves a thread
   * wake-up and two structured clones per operation (measured on SoftHSM2: ~150 µs → ~60 µs a call); the worker
   * still answers at least every millisecond (worker.ts), so a slow HSM's answers are not held back. A worker that
   * dies fails the unanswered part of its batch.
   */
  readonly maxBatch?: number | undefined;
  /**
   * How long a worker session uses its session-object copy of a token key before copying it again from the token
   * (default 60 s; token-session.ts). A key deleted by another process stops working here within this time; 0
   * copies on every operation (every use then checks the token object still exists).
   */
  readonly workingCopyTtlMs?: number | undefined;
  /**
   * Trusted-KEK mode (token-session.ts): session keys that leave wrapped carry CKA_WRAP_WITH_TRUSTED=true, and KEKs
   * can enter only through createTrustedKeks (trusted-kek.ts), never through this custody.
   */
  readonly trustedKeks?: boolean | undefined;
}

export const DEFAULT_WORKERS = 2;
export const DEFAULT_MAX_QUEUE = 1024;
export const DEFAULT_MAX_BATCH = 16;
/** How long close() waits for a worker to close its session before terminating it. */
const CLOSE_GRACE_MS = 5000;

interface Job {
  readonly request: OperationRequest;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: CustodyError) => void;
}

interface Slot {
  readonly worker: Worker;
  /** Set once the worker has opened its session; until then it takes no work. */
  session: Buffer | undefined;
  /** The batch sent to this worker and not answered yet, by operation id; empty when the worker is idle. */
  readonly jobs: Map<number, Job>;
  /** Why the worker ended, when it was an error. */
  error: string | undefined;
  readonly exited: Promise<void>;
}

export class WorkerPool {
  readonly #init: WorkerInit;
  readonly #module: LoadedModule;
  readonly #size: number;
  readonly #maxQueue: number;
  readonly #maxBatch: number;
  readonly #copyTtlMs: number | undefined;
  readonly #trustedKeks: boolean;
  readonly #slots = new Set<Slot>();
  readonly #queue: Job[] = [];
  /** Every worker's counters, ended workers' included, so that totals only grow. */
  readonly #counters: Float64Array[] = [];
  #nextId = 1;
  #closing = false;
  /** Shared with every worker: searches and token-object writes take it (token-lock.ts). */
  readonly #objectLock = new TokenLock(TokenLock.newBuffer());

  private constructor(init: WorkerInit, module: LoadedModule, size: number, maxQueue: number, maxBatch: number, copyTtlMs: number | undefined, trustedKeks: boolean) {
    this.#copyTtlMs = copyTtlMs;
    this.#trustedKeks = trustedKeks;
    this.#init = init;
    this.#module = module;
    this.#size = size;
    this.#maxQueue = maxQueue;
    this.#maxBatch = maxBatch;
  }

  /**
   * Starts `workers` threads and waits until each has its session. `module` is the main thread's load of the same
   * library (already initialised, user logged in): it closes the sessions of workers that die.
   */
  static async start(init: WorkerInit, module: LoadedModule, options: WorkerPoolOptions = {}): Promise<WorkerPool> {
    const size = options.workers ?? DEFAULT_WORKERS;
    const maxQueue = options.maxQueue ?? DEFAULT_MAX_QUEUE;
    if (!Number.isInteger(size) || size < 1) throw new CustodyError('TOKEN_UNAVAILABLE', `the PKCS#11 worker count must be a positive integer, not ${size}`);
    if (!Number.isInteger(maxQueue) || maxQueue < 0) throw new CustodyError('TOKEN_UNAVAILABLE', `the PKCS#11 queue bound must be a non-negative integer, not ${maxQueue}`);
    const maxBatch = options.maxBatch ?? DEFAULT_MAX_BATCH;
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new CustodyError('TOKEN_UNAVAILABLE', `the PKCS#11 batch size must be a positive integer, not ${maxBatch}`);
    const copyTtlMs = options.workingCopyTtlMs;
    if (copyTtlMs !== undefined && !(Number.isFinite(copyTtlMs) && copyTtlMs >= 0)) throw new CustodyError('TOKEN_UNAVAILABLE', `the working-copy lifetime must be a non-negative number of ms, not ${copyTtlMs}`);
    const pool = new WorkerPool(init, module, size, maxQueue, maxBatch, copyTtlMs, options.trustedKeks === true);
    const started = await Promise.allSettled(Array.from({ length: size }, () => pool.#spawn()));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed !== undefined) {
      await pool.close();
      throw failed.reason;
    }
    return pool;
  }

  run<K extends OperationName>(op: K, args: Operations[K]['args']): Promise<Operations[K]['result']> {
    return new Promise((resolve, reject) => {
      if (this.#closing) {
        reject(new CustodyError('TOKEN_UNAVAILABLE', 'the PKCS#11 custody is closed'));
        return;
      }
      const job: Job = { request: { op, args } as OperationRequest, resolve: resolve as (value: unknown) => void, reject };
      if (this.#slots.size === 0) {
        reject(new CustodyError('TOKEN_UNAVAILABLE', `no PKCS#11 worker is running (all ${this.#size} ended and could not be replaced)`));
        return;
      }
      const idle = this.#idle();
      if (idle !== undefined) {
        this.#dispatch(idle, [job]);
      } else if (this.#queue.length >= this.#maxQueue) {
        reject(new CustodyError('OVERLOADED', `the HSM is saturated: ${this.#slots.size} PKCS#11 workers busy and ${this.#queue.length} operations queued; try again later`));
      } else {
        this.#queue.push(job);
      }
    });
  }

  /** Tells every worker to drop a cached object handle (after a deletion through one of them). */
  forget(handle: string): void {
    for (const slot of this.#slots) if (slot.session !== undefined) post(slot.worker, { kind: 'forget', handle });
  }

  /** The counter arrays of every worker started so far (counters.ts). */
  counters(): readonly Float64Array[] {
    return this.#counters;
  }

  /** The worker threads, for tests that end one mid-operation. */
  workers(): readonly Worker[] {
    return [...this.#slots].map((s) => s.worker);
  }

  async close(): Promise<void> {
    this.#closing = true;
    for (const job of this.#queue.splice(0)) job.reject(new CustodyError('TOKEN_UNAVAILABLE', 'the PKCS#11 custody was closed before this operation ran'));
    await Promise.all(
      [...this.#slots].map(async (slot) => {
        // Queued behind any in-flight operation on the same port: that operation still completes first.
        post(slot.worker, { kind: 'close' });
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), CLOSE_GRACE_MS)));
        if ((await Promise.race([slot.exited, timeout])) === 'timeout') await slot.worker.terminate();
        clearTimeout(timer);
        await slot.exited;
      }),
    );
  }

  #idle(): Slot | undefined {
    for (const slot of this.#slots) if (slot.session !== undefined && slot.jobs.size === 0) return slot;
    return undefined;
  }

  #dispatch(slot: Slot, jobs: readonly Job[]): void {
    const sent = jobs.map((job) => {
      const id = this.#nextId++;
      slot.jobs.set(id, job);
      return { id, request: job.request };
    });
    post(slot.worker, { kind: 'run', jobs: sent });
  }

  /** Gives queued operations to idle workers, oldest first, at most maxBatch each. */
  #pump(): void {
    for (let slot = this.#idle(); slot !== undefined && this.#queue.length > 0; slot = this.#idle()) this.#dispatch(slot, this.#queue.splice(0, this.#maxBatch));
  }

  /** Starts one worker; resolves when its session is open, rejects with the CustodyError that kept it from opening. */
  #spawn(): Promise<void> {
    const counters = newCounterArray();
    this.#counters.push(counters);
    const init: WorkerInit = { ...this.#init, counters, workingCopyTtlMs: this.#copyTtlMs, wrapWithTrusted: this.#trustedKeks, objectLock: this.#objectLock.buffer };
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: init });
    const workerThreadId = worker.threadId; // -1 once it has exited
    let settle!: { resolve: () => void; reject: (e: CustodyError) => void };
    const ready = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    const slot: Slot = {
      worker,
      session: undefined,
      jobs: new Map(),
      error: undefined,
      exited: new Promise((resolve) => worker.once('exit', (code) => resolve(this.#exited(slot, workerThreadId, code, settle.reject)))),
    };
    this.#slots.add(slot);
    worker.on('error', (error) => (slot.error ??= error instanceof Error ? error.message : String(error)));
    worker.on('message', (message: FromWorker) => {
      switch (message.kind) {
        case 'ready':
          slot.session = Buffer.from(message.session);
          settle.resolve();
          this.#pump();
          return;
        case 'failed':
          slot.error = message.message;
          settle.reject(custodyError(message.code, message.message));
          return;
        case 'done':
          for (const outcome of message.outcomes) {
            const job = slot.jobs.get(outcome.id);
            if (job === undefined) continue;
            slot.jobs.delete(outcome.id);
            if (outcome.ok) job.resolve(outcome.value);
            else job.reject(custodyError(outcome.code, outcome.message));
          }
          this.#pump();
          return;
      }
    });
    return ready;
  }

  #exited(slot: Slot, workerThreadId: number, code: number, rejectStart: (e: CustodyError) => void): void {
    this.#slots.delete(slot);
    // A worker ended inside a locked call (terminated, or crashed): the others must not wait for it.
    this.#objectLock.releaseIfHeldBy(workerThreadId);
    const why = slot.error ?? `exit code ${code}`;
    rejectStart(new CustodyError('TOKEN_UNAVAILABLE', `a PKCS#11 worker ended before its session opened (${why})`));
    for (const job of slot.jobs.values()) job.reject(new CustodyError('TOKEN_ERROR', `the PKCS#11 worker running this operation ended (${why})`));
    slot.jobs.clear();
    if (this.#closing) return;
    if (slot.session !== undefined) {
      // The thread is gone, so nothing else uses its session; close it, or the token keeps it until C_Finalize.
      try {
        this.#module.pkcs11.C_CloseSession(slot.session);
      } catch {
        // CKR_SESSION_HANDLE_INVALID: the worker closed it before ending
      }
      // A replacement; if it cannot open a session either, the pool shrinks (see below).
      this.#spawn().catch(() => this.#failQueueIfEmpty());
    } else {
      this.#failQueueIfEmpty();
    }
  }

  /** With no worker left (none could be replaced), queued operations cannot run: fail them instead of hanging. */
  #failQueueIfEmpty(): void {
    if (this.#slots.size > 0) return;
    for (const job of this.#queue.splice(0)) job.reject(new CustodyError('TOKEN_UNAVAILABLE', `no PKCS#11 worker is running (all ${this.#size} ended and could not be replaced)`));
  }
}

function post(worker: Worker, message: ToWorker): void {
  worker.postMessage(message);
}

function custodyError(code: string, message: string): CustodyError {
  const known = (custodyErrorCodes as readonly string[]).includes(code);
  return new CustodyError(known ? (code as CustodyErrorCode) : 'TOKEN_ERROR', message);
}
