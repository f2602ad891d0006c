import { threadId } from 'node:worker_threads';

/*
 * One lock per token shared by the threads of a PKCS#11 pool (worker-pool.ts), taken around the calls that search
 * the token's objects and those that create or destroy token objects. On SoftHSM2 2.6.1 a search by one thread of
 * the process while another creates a token object can fail the creation (CKR_GENERAL_ERROR or
 * CKR_TEMPLATE_INCONSISTENT: 36 of 290 C_DeriveKey into token objects failed while another thread searched by label,
 * none of 23,370 into session objects), and a search during a C_CopyObject can see the copy as a second token key
 * (transient-objects.ts). Key operations on working copies, which are nearly all of a join's calls, never take it.
 *
 * The lock word holds the owner's threadId + 1 (0: free), so the pool can free a lock held by a worker that died
 * inside a call (releaseIfHeldBy) instead of leaving the others waiting for ever.
 */

export class TokenLock {
  readonly #word: Int32Array;

  constructor(buffer: SharedArrayBuffer) {
    this.#word = new Int32Array(buffer);
  }

  static newBuffer(): SharedArrayBuffer {
    return new SharedArrayBuffer(4);
  }

  /** The shared word, to hand to the other threads (each makes its own TokenLock on it). */
  get buffer(): SharedArrayBuffer {
    return this.#word.buffer as SharedArrayBuffer;
  }

  /** Runs `fn` holding the lock. Re-entrant within one thread: an inner call runs without waiting. */
  exclusive<T>(fn: () => T): T {
    const me = threadId + 1;
    if (Atomics.load(this.#word, 0) === me) return fn();
    for (;;) {
      const holder = Atomics.compareExchange(this.#word, 0, 0, me);
      if (holder === 0) break;
      Atomics.wait(this.#word, 0, holder, 50);
    }
    try {
      return fn();
    } finally {
      Atomics.store(this.#word, 0, 0);
      Atomics.notify(this.#word, 0, 1);
    }
  }

  /** Frees the lock if the thread `deadThreadId` holds it (it ended inside a locked call). */
  releaseIfHeldBy(deadThreadId: number): void {
    if (Atomics.compareExchange(this.#word, 0, deadThreadId + 1, 0) === deadThreadId + 1) Atomics.notify(this.#word, 0, 1);
  }
}
