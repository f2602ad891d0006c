import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { type PostgresStorage, type SeenJoinState, type Storage, openPostgresStorage } from '../../src/storage/index.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { JOIN_EUI, OTHER_JOIN_EUI, acceptDevNonce, at, makeDevice } from '../helpers/storage-fixtures.js';
import { type OpenedStorage, storageBackends } from '../helpers/storages.js';

/*
 * reserveJoin's `seen` (docs/storage.md, "Deciding on the state read with the device"): the join engine reads a
 * device and its join state in one statement (getDeviceForJoin) and hands the state back to reserveJoin, which may
 * decide on it instead of reading it again. Whatever the state did in between, the outcome must be the one a fresh,
 * locked read would have given: a JoinNonce is never issued twice, a replayed DevNonce is never accepted, a DevNonce
 * reset is never undone, and a refusal is never based on a state that no longer holds.
 */

const reset = { at: at(), actor: 'operator', action: 'device.reset-dev-nonces', subject: 'device', outcome: 'success', details: {} } as const;

async function seenOf(storage: Storage, devEui: string): Promise<SeenJoinState> {
  const found = await storage.getDeviceForJoin(devEui as never);
  assert.ok(found, `device ${devEui} should be found`);
  return found.seen;
}

for (const backend of storageBackends) {
  describe(`${backend.name} / reserveJoin on the state read with the device`, () => {
    let opened: OpenedStorage;
    let storage: Storage;
    before(async () => {
      opened = await backend.open();
      storage = opened.storage;
    });
    after(async () => opened.cleanup());

    it('getDeviceForJoin returns the device getDevice returns, or nothing for an unknown DevEUI', async () => {
      const device = makeDevice();
      await storage.insertDevice(device);
      const found = await storage.getDeviceForJoin(device.devEui);
      assert.deepEqual(found?.device, await storage.getDevice(device.devEui));
      assert.equal(found?.seen.devEui, device.devEui);
      assert.equal(found?.seen.joinEui, device.joinEui);
      assert.equal(await storage.getDeviceForJoin(makeDevice().devEui), undefined);
    });

    it('a current state: committed as decided on it', async () => {
      const device = makeDevice();
      await storage.insertDevice(device);
      const seen = await seenOf(storage, device.devEui);
      const r = await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 3), { sessionLimit: 5, seen });
      assert.ok('committed' in r);
      assert.equal(r.committed.lastJoinNonce, 1);
      const state = await storage.getJoinState(device.devEui, JOIN_EUI);
      assert.deepEqual([state.lastJoinNonce, state.lastDevNonce, state.usedDevNonces], [1, 3, [3]]);
      assert.deepEqual((await storage.listSessions(device.devEui)).map((s) => s.joinNonce), [1]);
      // The next join reads the state this one left.
      const again = await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 4), { sessionLimit: 5, seen: await seenOf(storage, device.devEui) });
      assert.ok('committed' in again);
      assert.equal(again.committed.lastJoinNonce, 2);
    });

    it('a state that changed since it was read: the replayed DevNonce is refused and no JoinNonce is issued twice', async () => {
      const device = makeDevice();
      await storage.insertDevice(device);
      const stale = await seenOf(storage, device.devEui);
      const first = await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 5), { sessionLimit: 5 });
      assert.ok('committed' in first);
      // Decided on `stale`, DevNonce 5 would be new and JoinNonce 1 free.
      const replay = await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 5), { sessionLimit: 5, seen: stale });
      assert.deepEqual(replay, { refused: 'DevNonceReplayed' });
      const next = await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 6), { sessionLimit: 5, seen: stale });
      assert.ok('committed' in next);
      assert.equal(next.committed.lastJoinNonce, 2);
      assert.deepEqual((await storage.listSessions(device.devEui)).map((s) => s.joinNonce).sort(), [1, 2]);
      assert.deepEqual((await storage.getJoinState(device.devEui, JOIN_EUI)).usedDevNonces, [5, 6]);
    });

    it('a refusal is not decided on a state that no longer holds: after a DevNonce reset the DevNonce is accepted', async () => {
      const device = makeDevice();
      await storage.insertDevice(device);
      const r = await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 9), { sessionLimit: 5 });
      assert.ok('committed' in r);
      const beforeReset = await seenOf(storage, device.devEui);
      assert.equal(await storage.resetDevNonces(device.devEui, [reset]), true);
      const after = await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 2), { sessionLimit: 5, seen: beforeReset });
      assert.ok('committed' in after, 'DevNonce 2 is new since the reset');
      assert.equal(after.committed.lastJoinNonce, 2);
      assert.deepEqual((await storage.getJoinState(device.devEui, JOIN_EUI)).usedDevNonces, [2]);
    });

    it('a state seen for another device or JoinEUI is not used', async () => {
      const a = makeDevice();
      const b = makeDevice();
      await storage.insertDevice(a);
      await storage.insertDevice(b);
      for (const n of [1, 2, 3]) assert.ok('committed' in (await storage.reserveJoin(b.devEui, JOIN_EUI, acceptDevNonce(b.devEui, JOIN_EUI, n), { sessionLimit: 5 })));
      const seenOfA = await seenOf(storage, a.devEui);
      const r = await storage.reserveJoin(b.devEui, JOIN_EUI, acceptDevNonce(b.devEui, JOIN_EUI, 4), { sessionLimit: 5, seen: seenOfA });
      assert.ok('committed' in r);
      assert.equal(r.committed.lastJoinNonce, 4);
      // b's state under another JoinEUI is its own (never joined there), with b's JoinNonce counter.
      const other = await storage.reserveJoin(b.devEui, OTHER_JOIN_EUI, acceptDevNonce(b.devEui, OTHER_JOIN_EUI, 1), { sessionLimit: 5, seen: await seenOf(storage, b.devEui) });
      assert.ok('committed' in other);
      assert.equal(other.committed.lastJoinNonce, 5);
      assert.deepEqual((await storage.getJoinState(b.devEui, JOIN_EUI)).usedDevNonces, [1, 2, 3, 4]);
    });

    it('many devices at once, each with the state it saw, some stale: every DevNonce once, JoinNonces unique per device', async () => {
      const devices = Array.from({ length: 24 }, () => makeDevice());
      for (const d of devices) await storage.insertDevice(d);
      const seen = await Promise.all(devices.map((d) => seenOf(storage, d.devEui)));
      // Every third device joins once more before the burst, so its seen state is stale.
      for (const [i, d] of devices.entries()) if (i % 3 === 0) await storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, 1), { sessionLimit: 5 });
      const burst = await Promise.all(
        devices.flatMap((d, i) => [1, 2].map((n) => storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, n), { sessionLimit: 5, seen: seen[i] }))),
      );
      devices.forEach((d, i) => {
        const [one, two] = [burst[2 * i]!, burst[2 * i + 1]!];
        if (i % 3 === 0) {
          assert.deepEqual(one, { refused: 'DevNonceReplayed' }, `${d.devEui}: DevNonce 1 was used before the burst`);
          assert.ok('committed' in two && two.committed.lastJoinNonce === 2);
        } else {
          assert.ok('committed' in one && one.committed.lastJoinNonce === 1);
          assert.ok('committed' in two && two.committed.lastJoinNonce === 2);
        }
      });
      for (const d of devices) {
        const sessions = await storage.listSessions(d.devEui);
        assert.deepEqual(sessions.map((s) => s.joinNonce).sort(), [1, 2]);
        assert.deepEqual((await storage.getJoinState(d.devEui, JOIN_EUI)).usedDevNonces, [1, 2]);
      }
    });
  });
}

describe('postgres / one statement for reservations on the state they saw', () => {
  let database: Awaited<ReturnType<typeof createTestDatabase>>;
  let storage: PostgresStorage;
  const seenOutcomes: string[] = [];
  const groups: number[] = [];
  before(async () => {
    database = await createTestDatabase();
    storage = await openPostgresStorage(database.url, { maxConnections: 4, onSeen: (o) => seenOutcomes.push(o), onGroupCommitted: (n) => groups.push(n) });
    await storage.migrate();
  });
  after(async () => {
    await storage.close();
    await database.drop();
  });

  it('reservations with a current state are written on it, without the locked path', async () => {
    const devices = Array.from({ length: 8 }, () => makeDevice());
    for (const d of devices) await storage.insertDevice(d);
    const seen = await Promise.all(devices.map((d) => seenOf(storage, d.devEui)));
    seenOutcomes.length = 0;
    groups.length = 0;
    const results = await Promise.all(devices.map((d, i) => storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, 7), { sessionLimit: 5, seen: seen[i] })));
    assert.ok(results.every((r) => 'committed' in r && r.committed.lastJoinNonce === 1));
    assert.deepEqual(seenOutcomes, Array(8).fill('written'));
    assert.equal(groups.reduce((a, b) => a + b, 0), 8);
  });

  it('a DevNonce reset committed while the statement waits for its lock: the statement writes nothing and the join is decided again on the reset state', async () => {
    const device = makeDevice();
    await storage.insertDevice(device);
    assert.ok('committed' in (await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 5), { sessionLimit: 5 })));
    const seen = await seenOf(storage, device.devEui);
    // What resetDevNonces does (commissioning-store.ts), held open: the device row locked, its DevNonce state cleared.
    const blocker = new pg.Client({ connectionString: database.url });
    await blocker.connect();
    const observer = new pg.Client({ connectionString: database.url });
    await observer.connect();
    try {
      await blocker.query('begin');
      await blocker.query('select dev_eui from devices where dev_eui = $1 for update', [device.devEui]);
      await blocker.query(`update device_join_state set last_dev_nonce = null, used_dev_nonces = '[]' where dev_eui = $1`, [device.devEui]);
      seenOutcomes.length = 0;
      // Decided on `seen` (DevNonce 5 used), DevNonce 6 is new; decided on the reset state it is new as well, but the
      // state it leaves differs: [5, 6] would undo the reset.
      const reservation = storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 6), { sessionLimit: 5, seen });
      await waitForLockWait(observer);
      await blocker.query('commit');
      const r = await reservation;
      assert.ok('committed' in r);
      assert.equal(r.committed.lastJoinNonce, 2);
      assert.deepEqual(seenOutcomes, ['decided again']);
      const state = await storage.getJoinState(device.devEui, JOIN_EUI);
      assert.deepEqual([state.lastJoinNonce, state.lastDevNonce, state.usedDevNonces], [2, 6, [6]]);
      assert.deepEqual((await storage.listSessions(device.devEui)).map((s) => s.joinNonce).sort(), [1, 2]);
    } finally {
      await blocker.end();
      await observer.end();
    }
  });

  it('its connections run REPEATABLE READ, every other statement READ COMMITTED', async () => {
    const settings = await storage.settings();
    assert.equal(settings.transactionIsolation, 'read committed');
    assert.equal(settings.groupWriteIsolation, 'repeatable read');
  });
});

/** Waits until a joinkeep backend waits for a lock (the one-statement write behind the blocker). */
async function waitForLockWait(observer: pg.Client): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const { rows } = await observer.query(`select 1 from pg_stat_activity where application_name = 'joinkeep' and wait_event_type = 'Lock'`);
    if (rows.length > 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('no joinkeep statement waited for the lock within 5 s');
}
