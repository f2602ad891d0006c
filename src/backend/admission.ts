import { BackendError } from './errors.js';

/*
 * Admission control for activation requests (JoinReq, RejoinReq), per process. At most `maxInFlight` are processed
 * at once; the next `maxQueue` wait in arrival order; a request that cannot start within `maxQueueMs`, or finds the
 * queue full, is answered at once with an overload Result (BackendError OVERLOADED → `Other`, src/backend/result-codes.ts)
 * instead of waiting for the network server's own deadline to pass. Why: past saturation an unbounded server answers
 * everything late (latency grows with the backlog) and the network server, which needs the Join-accept within about
 * 1 s of receiving the Join-request, gets nothing it can use; a bounded one answers what it admits in time and tells
 * the rest to retry. A shed request never reaches the join engine, so it consumes no JoinNonce and writes nothing.
 */

export interface AdmissionSettings {
  /** Activation requests processed at once (authentication, join engine, answer). */
  readonly maxInFlight: number;
  /** Requests that may wait for a slot; one more is shed at once. */
  readonly maxQueue: number;
  /** A waiting request that has not started within this time is shed. */
  readonly maxQueueMs: number;
}

export const defaultAdmission: AdmissionSettings = { maxInFlight: 64, maxQueue: 1024, maxQueueMs: 250 };

export type ShedReason = 'queue_full' | 'queue_timeout';

/** Gives the slot back; call exactly once. */
export type Release = () => void;

interface Waiter {
  readonly resolve: (release: Release) => void;
  readonly timer: NodeJS.Timeout;
  settled: boolean;
}

export class Admission {
  readonly #settings: AdmissionSettings;
  readonly #onShed: (reason: ShedReason) => void;
  #inFlight = 0;
  // FIFO with lazy removal: a waiter that timed out stays in the array, marked settled, until it reaches the head.
  #queue: Waiter[] = [];
  #head = 0;
  #waiting = 0;

  constructor(settings: AdmissionSettings, onShed: (reason: ShedReason) => void = () => undefined) {
    this.#settings = settings;
    this.#onShed = onShed;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get waiting(): number {
    return this.#waiting;
  }

  /** A slot (at once when one is free), or a BackendError OVERLOADED when the request is shed. */
  enter(): Release | Promise<Release> {
    if (this.#inFlight < this.#settings.maxInFlight) {
      this.#inFlight++;
      return this.#release();
    }
    if (this.#waiting >= this.#settings.maxQueue) throw this.#shed('queue_full');
    return new Promise<Release>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        settled: false,
        timer: setTimeout(() => {
          waiter.settled = true;
          this.#waiting--;
          reject(this.#shed('queue_timeout'));
        }, this.#settings.maxQueueMs),
      };
      this.#queue.push(waiter);
      this.#waiting++;
    });
  }

  #release(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#inFlight--;
      this.#next();
    };
  }

  #next(): void {
    while (this.#inFlight < this.#settings.maxInFlight && this.#head < this.#queue.length) {
      const w = this.#queue[this.#head++]!;
      if (w.settled) continue;
      w.settled = true;
      clearTimeout(w.timer);
      this.#waiting--;
      this.#inFlight++;
      w.resolve(this.#release());
    }
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  #shed(reason: ShedReason): BackendError {
    this.#onShed(reason);
    const why = reason === 'queue_full' ? `${this.#settings.maxQueue} requests already waiting` : `could not start within ${this.#settings.maxQueueMs} ms`;
    return new BackendError('OVERLOADED', `the Join Server is overloaded (${why}); retry later`);
  }
}
