import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { type SqliteStorage, StorageError, openSqliteStorage } from '../../src/storage/index.js';
import { JOIN_EUI, acceptDevNonce, makeDevice, randomEui } from '../helpers/storage-fixtures.js';

/*
 * The join's device look-up on SQLite, batched per turn of the event loop (docs/storage.md, "Look-ups on the join
 * path"): one statement for the look-ups of one turn, each caller gets its own device and join state, and nothing is
 * cached. The contract tests (contract.test.ts, seen-join-state.test.ts) check the same look-up one at a time.
 */

describe('sqlite / batched look-ups on the join path', () => {
  let dir: string;
  let path: string;
  let storage: SqliteStorage;
  const batches: [string, number][] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'joinkeep-lookups-'));
    path = join(dir, 'joinkeep.db');
    storage = await openSqliteStorage(path, { onLookupBatch: (operation, keys) => batches.push([operation, keys]) });
    await storage.migrate();
  });
  after(async () => {
    await storage.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('devices looked up in one turn / one statement; each caller its own device and state, an unknown one undefined', async () => {
    const devices = Array.from({ length: 5 }, () => makeDevice());
    for (const d of devices) await storage.insertDevice(d);
    // Device 0 has joined once: its state is not the empty one of the others.
    const joined = await storage.reserveJoin(devices[0]!.devEui, JOIN_EUI, acceptDevNonce(devices[0]!.devEui, JOIN_EUI, 7), { sessionLimit: 3 });
    assert.ok('committed' in joined);
    const expected = await Promise.all(devices.map(async (d) => ({ device: await storage.getDevice(d.devEui), state: await storage.getJoinState(d.devEui, JOIN_EUI) })));
    batches.length = 0;
    const unknown = randomEui();
    const found = await Promise.all([...devices, devices[0]!].map((d) => storage.getDeviceForJoin(d.devEui)).concat(storage.getDeviceForJoin(unknown)));
    assert.deepEqual(batches, [['getDeviceForJoin', 6]], 'one statement for six keys (one asked twice)');
    assert.equal(found[6], undefined);
    [...expected, expected[0]!].forEach((e, i) => {
      const f = found[i];
      assert.ok(f !== undefined);
      assert.deepEqual(f.device, e.device);
      assert.equal(f.seen.devEui, e.device!.devEui);
      assert.equal(f.seen.row.last_join_nonce, e.state.lastJoinNonce);
      assert.equal(f.seen.row.last_dev_nonce, e.state.lastDevNonce);
    });
    assert.equal(found[0]!.seen.row.last_dev_nonce, 7);
    assert.equal(found[1]!.seen.row.state_dev_eui, null, 'a device that never joined has no join state row');
  });

  it('a device another connection changed / the next look-up reads it as committed (nothing is cached)', async () => {
    const device = makeDevice();
    await storage.insertDevice(device);
    assert.equal((await storage.getDeviceForJoin(device.devEui))!.seen.row.last_join_nonce, 0);
    const other = new BetterSqlite3(path);
    try {
      other.prepare('update devices set last_join_nonce = 41 where dev_eui = ?').run(device.devEui);
    } finally {
      other.close();
    }
    assert.equal((await storage.getDeviceForJoin(device.devEui))!.seen.row.last_join_nonce, 41);
    const other2 = new BetterSqlite3(path);
    try {
      other2.pragma('foreign_keys = ON');
      other2.prepare('delete from devices where dev_eui = ?').run(device.devEui);
    } finally {
      other2.close();
    }
    assert.equal(await storage.getDeviceForJoin(device.devEui), undefined);
  });

  it('a batch that fails / every look-up in it fails with UNAVAILABLE, the next batch is answered', async () => {
    const device = makeDevice();
    await storage.insertDevice(device);
    const admin = new BetterSqlite3(path);
    try {
      admin.exec('alter table device_join_state rename to device_join_state_away');
      const outcomes = await Promise.allSettled([storage.getDeviceForJoin(device.devEui), storage.getDeviceForJoin(randomEui())]);
      for (const o of outcomes) assert.ok(o.status === 'rejected' && o.reason instanceof StorageError && o.reason.code === 'UNAVAILABLE', String(o.status === 'rejected' ? o.reason : 'fulfilled'));
    } finally {
      admin.exec('alter table device_join_state_away rename to device_join_state');
      admin.close();
    }
    assert.equal((await storage.getDeviceForJoin(device.devEui))?.device.devEui, device.devEui);
  });
});
