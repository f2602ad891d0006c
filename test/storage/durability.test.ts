import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { describe, it } from 'node:test';
import pg from 'pg';
import { PostgresStorage, SqliteStorage, openPostgresStorage } from '../../src/storage/index.js';
import { pageSize } from '../../src/storage/cursor.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { storageBackends } from '../helpers/storages.js';
import { makeDevice } from '../helpers/storage-fixtures.js';

/* The durability settings docs/storage.md claims, read back from the databases themselves. */

const sqlite = storageBackends.find((b) => b.name === 'sqlite');
const postgres = storageBackends.find((b) => b.name === 'postgres');
assert.ok(sqlite && postgres);

describe('sqlite / durability', () => {
  it('connections / WAL, synchronous=FULL, foreign keys on, busy timeout 5 s; the writer thread\'s connection the same', async () => {
    const opened = await sqlite.open();
    try {
      assert.ok(opened.storage instanceof SqliteStorage);
      assert.deepEqual(await opened.storage.settings(), {
        journalMode: 'wal',
        synchronous: 2,
        foreignKeys: true,
        busyTimeoutMs: 5000,
        // The connection that commits the join path's state: FULL is what makes an answer wait for the fsync.
        // Its COMMITs never checkpoint: the checkpointer thread does (sqlite-checkpoint-thread.ts).
        writer: { journalMode: 'wal', synchronous: 2, foreignKeys: true, walAutocheckpoint: 0, checkpointError: undefined },
      });
    } finally {
      await opened.cleanup();
    }
  });

  it('file / created with mode 0600, and so is its WAL', async () => {
    const opened = await sqlite.open();
    try {
      await opened.storage.insertDevice(makeDevice());
      const path = opened.path as string;
      assert.equal((await stat(path)).mode & 0o777, 0o600);
      assert.equal((await stat(`${path}-wal`)).mode & 0o777, 0o600);
    } finally {
      await opened.cleanup();
    }
  });
});

describe('postgres / durability', () => {
  it('session / synchronous_commit on', async () => {
    const opened = await postgres.open();
    try {
      assert.ok(opened.storage instanceof PostgresStorage);
      assert.equal((await opened.storage.settings()).synchronousCommit, 'on');
    } finally {
      await opened.cleanup();
    }
  });

  /** What our sessions run with when the database's default is `serverDefault`. */
  async function sessionSetting(serverDefault: string): Promise<string> {
    const database = await createTestDatabase();
    try {
      const name = new URL(database.url).pathname.slice(1);
      const admin = new pg.Client({ connectionString: database.url });
      await admin.connect();
      await admin.query(`alter database ${name} set synchronous_commit = ${serverDefault}`);
      await admin.end();
      const storage = await openPostgresStorage(database.url);
      try {
        return (await storage.settings()).synchronousCommit;
      } finally {
        await storage.close();
      }
    } finally {
      await database.drop();
    }
  }

  it('server default synchronous_commit=off / our sessions still commit synchronously', async () => {
    assert.equal(await sessionSetting('off'), 'on');
  });

  // `local` flushes the primary's WAL but does not wait for synchronous standbys: after a failover a JoinNonce that
  // left in an answer could be missing on the new primary and be issued again (docs/operations.md).
  it('server default synchronous_commit=local / our sessions wait for synchronous standbys too', async () => {
    assert.equal(await sessionSetting('local'), 'on');
  });

  it('server default synchronous_commit=remote_apply / kept (it waits for more than on)', async () => {
    assert.equal(await sessionSetting('remote_apply'), 'remote_apply');
  });
});

describe('pagination / page size', () => {
  it('default 100, clamped to 1…1000', () => {
    assert.equal(pageSize(undefined), 100);
    assert.equal(pageSize(0), 1);
    assert.equal(pageSize(-5), 1);
    assert.equal(pageSize(2.7), 2);
    assert.equal(pageSize(1000), 1000);
    assert.equal(pageSize(1001), 1000);
    assert.equal(pageSize(Number.NaN), 100);
  });
});
