import type pg from 'pg';
import { storageFailure } from './kysely-storage.js';

/*
 * Batched look-ups on PostgreSQL (docs/storage.md, "Look-ups on the join path"). Each look-up is a round trip, and on
 * loopback a round trip's socket write alone cost more event-loop time than the rest of a join's storage work. The
 * look-ups of one kind issued in one turn of the event loop therefore share one statement over an array of keys
 * (`= any($1)`), run after that turn. A batch caches nothing: every look-up reads what is committed when its batch
 * runs (the peer look-ups' one-second answers are kept above it, in kysely-storage.ts).
 */

interface Waiter<Row> {
  readonly resolve: (rows: Row[]) => void;
  readonly reject: (error: unknown) => void;
}

export class BatchedLookup<Row> {
  readonly #pool: pg.Pool;
  readonly #operation: string;
  readonly #statement: { readonly name: string; readonly text: string };
  readonly #keyOf: (row: Row) => string;
  readonly #onBatch: ((operation: string, keys: number) => void) | undefined;
  #pending = new Map<string, Waiter<Row>[]>();

  /** `text` selects the rows whose key is in the array $1; `keyOf` tells which key a returned row belongs to. */
  constructor(pool: pg.Pool, operation: string, text: string, keyOf: (row: Row) => string, onBatch?: (operation: string, keys: number) => void) {
    this.#pool = pool;
    this.#operation = operation;
    this.#statement = { name: `joinkeep_lookup_${operation}`, text };
    this.#keyOf = keyOf;
    this.#onBatch = onBatch;
  }

  /** The rows for `key` (several when the key is not unique), read in the next batch. */
  get(key: string): Promise<Row[]> {
    return new Promise<Row[]>((resolve, reject) => {
      const waiting = this.#pending.get(key);
      if (waiting !== undefined) waiting.push({ resolve, reject });
      else {
        if (this.#pending.size === 0) setImmediate(() => void this.#run());
        this.#pending.set(key, [{ resolve, reject }]);
      }
    });
  }

  async #run(): Promise<void> {
    const batch = this.#pending;
    this.#pending = new Map();
    this.#onBatch?.(this.#operation, batch.size);
    try {
      const { rows } = await this.#pool.query<Row & pg.QueryResultRow>({ ...this.#statement, values: [[...batch.keys()]] });
      const byKey = new Map<string, Row[]>();
      for (const row of rows) {
        const key = this.#keyOf(row);
        const list = byKey.get(key);
        if (list === undefined) byKey.set(key, [row]);
        else list.push(row);
      }
      for (const [key, waiters] of batch) for (const w of waiters) w.resolve(byKey.get(key) ?? []);
    } catch (error) {
      const failure = storageFailure('postgres', error, this.#operation);
      for (const waiters of batch.values()) for (const w of waiters) w.reject(failure);
    }
  }
}
