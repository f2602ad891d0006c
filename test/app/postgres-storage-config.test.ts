import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Kysely } from 'kysely';
import { sql } from 'kysely';
import pg from 'pg';
import { AppError, type JoinkeepConfig, defaultConfig, openConfiguredStorage, validateConfig } from '../../src/app/index.js';
import type { Database } from '../../src/storage/schema.js';
import { createTestDatabase } from '../helpers/postgres.js';

/* joinkeep.json's PostgreSQL tuning keys (docs/operations.md): validated with a message naming the key, and passed to the pool. */

const software = { kind: 'software', masterKey: { file: 'master.key' } } as const;
const withStorage = (storage: Record<string, unknown>): unknown => ({ ...defaultConfig({ kind: 'postgres' }, software), storage });

function refusal(storage: Record<string, unknown>): string {
  try {
    validateConfig(withStorage(storage), 'joinkeep.json');
  } catch (error) {
    assert.ok(error instanceof AppError);
    assert.equal(error.code, 'CONFIG_INVALID');
    return error.message;
  }
  assert.fail(`accepted ${JSON.stringify(storage)}`);
}

describe('config / PostgreSQL storage tuning', () => {
  it('accepted / every key within its range comes back as given; none is required', () => {
    const storage = { kind: 'postgres', url: 'postgres://db/joinkeep', maxConnections: 24, connectTimeoutMs: 2_000, maxGroupSize: 64, maxGroupsInFlight: 4 };
    assert.deepEqual(validateConfig(withStorage(storage), 'joinkeep.json').storage, storage);
    assert.deepEqual(validateConfig(withStorage({ kind: 'postgres' }), 'joinkeep.json').storage, { kind: 'postgres' });
  });

  it('refused / out of range, not an integer, unknown keys, and more groups in flight than connections to hold them', () => {
    assert.match(refusal({ kind: 'postgres', maxConnections: 1 }), /storage\.maxConnections must be an integer 2\.\.1000/);
    assert.match(refusal({ kind: 'postgres', maxConnections: 10.5 }), /storage\.maxConnections/);
    assert.match(refusal({ kind: 'postgres', maxGroupSize: 0 }), /storage\.maxGroupSize must be an integer 1\.\.1024/);
    assert.match(refusal({ kind: 'postgres', maxGroupSize: '64' }), /storage\.maxGroupSize/);
    assert.match(refusal({ kind: 'postgres', connectTimeoutMs: 10 }), /storage\.connectTimeoutMs must be an integer 100\.\.600000/);
    assert.match(refusal({ kind: 'postgres', maxGroupsInFlight: 10 }), /storage\.maxGroupsInFlight \(10\) must be smaller than storage\.maxConnections \(10\)/);
    assert.match(refusal({ kind: 'postgres', maxConnections: 4, maxGroupsInFlight: 4 }), /must be smaller/);
    assert.match(refusal({ kind: 'postgres', poolSize: 4 }), /storage: unknown key "poolSize" \(url, maxConnections, connectTimeoutMs, maxGroupSize, maxGroupsInFlight\)/);
    assert.match(refusal({ kind: 'postgres', url: '' }), /storage\.url must be a PostgreSQL URL/);
  });

  it('applied / maxConnections bounds the connections a storage opens, whatever the load', async () => {
    const database = await createTestDatabase();
    const config = validateConfig(withStorage({ kind: 'postgres', url: database.url, maxConnections: 3, maxGroupsInFlight: 1 }), 'joinkeep.json') as JoinkeepConfig;
    const storage = await openConfiguredStorage('/nonexistent', config, {});
    const observer = new pg.Client({ connectionString: database.url });
    await observer.connect();
    try {
      const db = (storage as unknown as { db: Kysely<Database> }).db;
      const dbName = new URL(database.url).pathname.slice(1);
      let most = 0;
      const sleepers = Array.from({ length: 12 }, () => sql`select pg_sleep(0.3)`.execute(db));
      for (let i = 0; i < 5; i++) {
        await new Promise((r) => setTimeout(r, 100));
        const { rows } = await observer.query<{ n: string }>(
          `select count(*) as n from pg_stat_activity where datname = $1 and application_name = 'joinkeep'`, [dbName]);
        most = Math.max(most, Number(rows[0]!.n));
      }
      await Promise.all(sleepers);
      assert.equal(most, 3, 'the pool opened exactly maxConnections connections for 12 concurrent queries');
    } finally {
      await observer.end();
      await storage.close();
      await database.drop();
    }
  });
});
