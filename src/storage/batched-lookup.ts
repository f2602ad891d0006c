import { storageFailure } from './kysely-storage.js';

/*
 * Look-ups batched per turn of the event loop (docs/storage.md, "Look-ups on the join path"): the look-ups of one kind
 * issued in one turn share one statement over their keys, run after that turn. A batch caches nothing: every look-up
 * reads what is committed when its batch runs. The storages give the statement (postgres-lookups.ts, sqlite.ts).
 */

interface Waiter<Row> {
  readonly resolve: (rows: Row[]) => void;
  readonly reject: (error: unknown) => void;
}

/** Reads the rows of every key in `keys` (distinct) in one statement. */
export type FetchRows<Row> = (keys: string[]) => Promise<readonly Row[]>;

export class BatchedLookup<Row> {
  readonly #kind: 'sqlite' | 'postgres';
  readonly #operation: string;
  readonly #fetch: FetchRows<Row>;
  readonly #keyOf: (row: Row) => string;
  readonly #onBatch: ((operation: string, keys: number) => void) | undefined;
  #pending = new Map<string, Waiter<Row>[]>();

  /** `keyOf` tells which key a returned row belongs to; `onBatch` observes each batch's operation and key count. */
  constructor(kind: 'sqlite' | 'postgres', operation: string, fetch: FetchRows<Row>, keyOf: (row: Row) => string, onBatch?: (operation: string, keys: number) => void) {
    this.#kind = kind;
    this.#operation = operation;
    this.#fetch = fetch;
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
      const rows = await this.#fetch([...batch.keys()]);
      const byKey = new Map<string, Row[]>();
      for (const row of rows) {
        const key = this.#keyOf(row);
        const list = byKey.get(key);
        if (list === undefined) byKey.set(key, [row]);
        else list.push(row);
      }
      for (const [key, waiters] of batch) for (const w of waiters) w.resolve(byKey.get(key) ?? []);
    } catch (error) {
      const failure = storageFailure(this.#kind, error, this.#operation);
      for (const waiters of batch.values()) for (const w of waiters) w.reject(failure);
    }
  }
}
