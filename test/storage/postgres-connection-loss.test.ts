import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Kysely, sql } from 'kysely';
import pg from 'pg';
import { openPostgresStorage } from '../../src/storage/index.js';
import type { Database } from '../../src/storage/schema.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { makeDevice } from '../helpers/storage-fixtures.js';

/*
 * A PostgreSQL connection lost while a transaction holds it (the backend terminated, the server restarted) between two
 * statements: pg emits 'error' on that checked-out client, where pg-pool listens on idle clients only. Without a
 * listener the process would end; here the transaction fails with the error, the storage reports it once and keeps
 * working on a new connection.
 */

interface Fixture {
  readonly db: Kysely<Database>;
  /** A connection of its own, to terminate the storage's. */
  readonly admin: pg.Client;
  /** What the storage reported through onConnectionError. */
  readonly reported: Error[];
  waitForReports(n: number): Promise<void>;
}

/** A migrated storage on a fresh database; afterwards checks that it still works, then tears everything down. */
async function withStorage(test: (f: Fixture) => Promise<void>): Promise<void> {
  const database = await createTestDatabase();
  const reported: Error[] = [];
  const storage = await openPostgresStorage(database.url, { onConnectionError: (error) => reported.push(error) });
  const admin = new pg.Client({ connectionString: database.url });
  await admin.connect();
  try {
    await storage.migrate();
    const waitForReports = async (n: number): Promise<void> => {
      const deadline = Date.now() + 5_000;
      while (reported.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    };
    await test({ db: (storage as unknown as { db: Kysely<Database> }).db, admin, reported, waitForReports });
    // The lost connections are gone from the pool: the next requests get new ones.
    const device = makeDevice();
    await storage.insertDevice(device);
    assert.equal((await storage.getDevice(device.devEui))?.devEui, device.devEui);
  } finally {
    await admin.end();
    await storage.close();
    await database.drop();
  }
}

describe('postgres / a connection lost while checked out', () => {
  it('between two statements of a transaction / the transaction fails, the process lives on, the storage keeps working', async () => {
    await withStorage(async ({ db, admin, reported, waitForReports }) => {
      const transaction = db.transaction().execute(async (trx) => {
        const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx);
        await admin.query('select pg_terminate_backend($1)', [rows[0]!.pid]);
        // The client is checked out and idle in the transaction when its connection ends.
        await waitForReports(1);
        await sql`select 1`.execute(trx);
      });
      await assert.rejects(transaction);
      assert.ok(reported.length >= 1, 'the lost connection is reported');
    });
  });

  it('idle in the pool / each lost connection is reported once, and the next query opens a new one', async () => {
    await withStorage(async ({ db, admin, reported, waitForReports }) => {
      // Three connections in the pool, idle once these end.
      await Promise.all([1, 2, 3].map(() => sql`select pg_sleep(0.05)`.execute(db)));
      const { rows } = await admin.query<{ n: number }>(
        `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where datname = current_database() and application_name = 'joinkeep'`);
      const terminated = rows[0]!.n;
      assert.ok(terminated >= 3, `terminated ${terminated} idle connections`);
      await waitForReports(terminated);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(reported.length, terminated, 'one report per lost connection');
    });
  });
});
