import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { type SqliteStorage, openSqliteStorage } from '../../src/storage/index.js';
import type { CheckpointSettings } from '../../src/storage/sqlite-writer-protocol.js';
import { JOIN_EUI, acceptDevNonce, makeDevice } from '../helpers/storage-fixtures.js';

/*
 * Checkpoints on SQLite (docs/storage.md, "Checkpoints"): the writer thread's COMMITs never copy the WAL back into the
 * database file; the checkpointer thread does, and keeps the WAL from growing without bound. Observed from outside:
 * what the database file alone holds (a copy of it without its -wal), and the size of the -wal file. Each test has a
 * control with the checkpointer effectively off (an interval longer than the test), which must show the opposite.
 */

const NEVER = 3_600_000;

interface Fixture {
  readonly storage: SqliteStorage;
  readonly path: string;
  readonly dir: string;
}

async function open(checkpoints: CheckpointSettings): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'joinkeep-ckpt-'));
  const path = join(dir, 'joinkeep.db');
  const storage = await openSqliteStorage(path, { checkpoints });
  await storage.migrate();
  return { storage, path, dir };
}

async function close(f: Fixture): Promise<void> {
  await f.storage.close();
  await rm(f.dir, { recursive: true, force: true });
}

/**
 * Sessions in the database file itself: a copy of the file without its WAL, opened on its own. Undefined when the copy
 * is torn: copied while the checkpointer was writing pages into the file (this copy takes no lock, so it can catch
 * half of a checkpoint; the storage's own readers cannot), which SQLite reports as a malformed image.
 */
async function sessionsInDatabaseFile(f: Fixture): Promise<number | undefined> {
  const copy = join(f.dir, `copy-${Date.now()}-${Math.random()}.db`);
  await copyFile(f.path, copy);
  const db = new BetterSqlite3(copy);
  try {
    // Before the first checkpoint even the schema is only in the WAL.
    if (db.prepare(`select 1 from sqlite_schema where name = 'sessions'`).get() === undefined) return 0;
    return (db.prepare('select count(*) as n from sessions').get() as { n: number }).n;
  } catch (error) {
    if (error instanceof BetterSqlite3.SqliteError && (error.code === 'SQLITE_CORRUPT' || error.code === 'SQLITE_NOTADB')) return undefined;
    throw error;
  } finally {
    db.close();
    await rm(copy, { force: true });
    await rm(`${copy}-wal`, { force: true });
    await rm(`${copy}-shm`, { force: true });
  }
}

/** Accepts `perDevice` joins of each of `devices` new devices, a round of all devices at a time (a few groups per round). */
async function acceptJoins(f: Fixture, devices: number, perDevice: number): Promise<void> {
  const fleet = Array.from({ length: devices }, () => makeDevice());
  for (const d of fleet) await f.storage.insertDevice(d);
  for (let n = 1; n <= perDevice; n++) {
    const results = await Promise.all(fleet.map((d) => f.storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, n), { sessionLimit: 5 })));
    for (const r of results) assert.ok('session' in r, 'every reservation is accepted');
  }
}

async function eventually(check: () => Promise<boolean>, withinMs: number): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('sqlite / checkpoints', () => {
  it('checkpointer / committed joins reach the database file itself while the storage stays open', async () => {
    const f = await open({ intervalMs: 20, restartFrames: 10_000 });
    try {
      await acceptJoins(f, 8, 3);
      assert.ok(await eventually(async () => (await sessionsInDatabaseFile(f)) === 24, 5_000), 'the 24 sessions are checkpointed into the file');
      const totals = f.storage.checkpointTotals();
      assert.ok(totals.passive >= 1 && totals.seconds > 0, `checkpoints counted: ${JSON.stringify(totals)}`);
      assert.equal(totals.failures, 0);
    } finally {
      await close(f);
    }
  });

  it('control / without the checkpointer the writer\'s commits stay in the WAL (the writer itself never checkpoints)', async () => {
    const f = await open({ intervalMs: NEVER, restartFrames: 10_000 });
    try {
      await acceptJoins(f, 8, 3);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await sessionsInDatabaseFile(f), 0);
      assert.deepEqual(f.storage.checkpointTotals(), { passive: 0, restart: 0, failures: 0, seconds: 0, walFrames: 0 });
      // Still all committed: a reader with the WAL sees them.
      const reader = new BetterSqlite3(f.path, { readonly: true });
      try {
        assert.equal((reader.prepare('select count(*) as n from sessions').get() as { n: number }).n, 24);
      } finally {
        reader.close();
      }
    } finally {
      await close(f);
    }
  });

  it('checkpointer / the WAL stays bounded under sustained commits; without it, it grows', async () => {
    const bounded = await open({ intervalMs: 5, restartFrames: 64 });
    const unbounded = await open({ intervalMs: NEVER, restartFrames: 64 });
    try {
      const walOf = async (f: Fixture): Promise<number> => (await stat(`${f.path}-wal`)).size;
      const frame = 4096 + 24;
      // The checkpointer thread is running once a first join has reached the database file.
      await acceptJoins(bounded, 1, 1);
      assert.ok(await eventually(async () => (await sessionsInDatabaseFile(bounded)) === 1, 5_000));
      const [boundedBefore, unboundedBefore] = [await walOf(bounded), await walOf(unbounded).catch(() => 0)];
      // 150 rounds of 40 joins each: several hundred commits of tens of pages each.
      await Promise.all([acceptJoins(bounded, 40, 150), acceptJoins(unbounded, 40, 150)]);
      const [withCheckpointer, without] = [await walOf(bounded), await walOf(unbounded)];
      // Without checkpoints every commit's pages are appended to the WAL.
      assert.ok(without - unboundedBefore > 1_000 * frame, `the WAL without a checkpointer grew from ${unboundedBefore} to ${without} bytes`);
      // With them it restarts from its beginning: it holds restartFrames at most, plus what the writer commits while a
      // RESTART waits for the write lock (the file keeps its largest size, so growth is what is measured).
      assert.ok(withCheckpointer - boundedBefore < (without - unboundedBefore) / 3, `the WAL with the checkpointer grew from ${boundedBefore} to ${withCheckpointer} bytes (without: ${without})`);
    } finally {
      await close(bounded);
      await close(unbounded);
    }
  });
});
