import type pg from 'pg';
import { BatchedLookup } from './batched-lookup.js';

/*
 * Batched look-ups on PostgreSQL (docs/storage.md, "Look-ups on the join path"). Each look-up is a round trip, and on
 * loopback a round trip's socket write alone cost more event-loop time than the rest of a join's storage work. The
 * look-ups of one kind issued in one turn of the event loop therefore share one prepared statement over an array of
 * keys (`= any($1)`), run after that turn (batched-lookup.ts). The peer look-ups' one-second answers are kept above
 * it, in kysely-storage.ts.
 */

/** `text` selects the rows whose key is in the array $1; `keyOf` tells which key a returned row belongs to. */
export function postgresLookup<Row>(pool: pg.Pool, operation: string, text: string, keyOf: (row: Row) => string, onBatch?: (operation: string, keys: number) => void): BatchedLookup<Row> {
  const statement = { name: `joinkeep_lookup_${operation}`, text };
  const fetch = async (keys: string[]): Promise<Row[]> => (await pool.query<Row & pg.QueryResultRow>({ ...statement, values: [keys] })).rows;
  return new BatchedLookup('postgres', operation, fetch, keyOf, onBatch);
}
