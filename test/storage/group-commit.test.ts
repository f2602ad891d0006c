import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import type { Eui64 } from '../../src/protocol/index.js';
import { type JoinDecision, type JoinState, type ReserveJoinResult, type SqliteStorage, type SqliteStorageOptions, StorageError, openSqliteStorage } from '../../src/storage/index.js';
import { JOIN_EUI, acceptDevNonce, assertGroupCommitsObserved, makeDevice, makeSession } from '../helpers/storage-fixtures.js';

/*
 * Group commit on SQLite (docs/storage.md "Group commit"): reservations issued in the same turn of the event loop
 * share one transaction. Observed through a second, independent connection to the same file, which only ever sees
 * committed data, and through the storage's onGroupCommitted hook. No timing is asserted.
 */

interface Fixture {
  readonly storage: SqliteStorage;
  /** A second connection to the same file: sees only what was committed. */
  readonly observer: BetterSqlite3.Database;
  readonly groups: number[];
  cleanup(): Promise<void>;
}

/** Groups start at 64 by default here, so most tests see one turn's requests in one group (sizes: their own tests). */
async function openFixture(options: SqliteStorageOptions = { minGroupSize: 64 }): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'joinkeep-group-'));
  const path = join(dir, 'joinkeep.db');
  const groups: number[] = [];
  const storage = await openSqliteStorage(path, { ...options, onGroupCommitted: (n) => groups.push(n) });
  await storage.migrate();
  const observer = new BetterSqlite3(path);
  observer.pragma('foreign_keys = ON');
  return {
    storage,
    observer,
    groups,
    async cleanup() {
      observer.close();
      await storage.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const committedJoinNonce = (f: Fixture, devEui: Eui64): number =>
  (f.observer.prepare('select last_join_nonce from devices where dev_eui = ?').get(devEui) as { last_join_nonce: number }).last_join_nonce;
const committedSessions = (f: Fixture, devEui: Eui64): number =>
  (f.observer.prepare('select count(*) as n from sessions where dev_eui = ?').get(devEui) as { n: number }).n;
const committedAudit = (f: Fixture): number => (f.observer.prepare('select count(*) as n from audit_events').get() as { n: number }).n;

describe('sqlite / group commit', () => {
  let f: Fixture;
  before(async () => {
    f = await openFixture();
  });
  after(async () => {
    await f.cleanup();
  });

  it('reservations issued together / one transaction, and each resolves only once its commit is visible to another connection', async () => {
    const devices = Array.from({ length: 10 }, () => makeDevice());
    for (const d of devices) await f.storage.insertDevice(d);
    f.groups.length = 0;
    const seenAtResolve: { devEui: Eui64; joinNonce: number; storedJoinNonce: number; sessions: number }[] = [];
    // Per device: DevNonce 1, DevNonce 2, then DevNonce 1 again (a replay of an earlier member of the same group).
    const pending = devices.flatMap((d) =>
      [1, 2, 1].map((devNonce) =>
        f.storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, devNonce), { sessionLimit: 5 }).then((r) => {
          if ('committed' in r) {
            seenAtResolve.push({ devEui: d.devEui, joinNonce: r.committed.lastJoinNonce, storedJoinNonce: committedJoinNonce(f, d.devEui), sessions: committedSessions(f, d.devEui) });
          }
          return r;
        }),
      ),
    );
    const results = await Promise.all(pending);
    assert.deepEqual(f.groups, [30], 'all 30 reservations of this turn in one group');
    assert.equal(seenAtResolve.length, 20);
    for (const seen of seenAtResolve) {
      // The whole group (both joins of the device) was committed before the first answer was released.
      assert.equal(seen.storedJoinNonce, 2, `device ${seen.devEui}: committed JoinNonce when its reservation resolved`);
      assert.equal(seen.sessions, 2);
    }
    devices.forEach((d, i) => {
      const [first, second, replay] = results.slice(i * 3, i * 3 + 3) as ReserveJoinResult<string>[];
      assert.ok(first && 'committed' in first && first.committed.lastJoinNonce === 1, `device ${d.devEui}: first join JoinNonce 1`);
      assert.ok(second && 'committed' in second && second.committed.lastJoinNonce === 2, `device ${d.devEui}: second join JoinNonce 2`);
      assert.deepEqual(replay, { refused: 'DevNonceReplayed' });
    });
  });

  it('observeGroupCommits / told each group that wrote, with its size and the time until its COMMIT; a group of refusals only is not reported', async () => {
    await assertGroupCommitsObserved(f.storage, f.groups);
  });

  it('a refusal, a throwing decision and a failing write in one group / only those roll back, the others commit', async () => {
    const [accepted, refused, throwing, failing] = Array.from({ length: 4 }, () => makeDevice());
    for (const d of [accepted!, refused!, throwing!, failing!]) await f.storage.insertDevice(d);
    const boom = new Error('decide failed');
    // Two reservations of `failing` with the same SessionKeyID: the second violates unique (dev_eui, session_key_id)
    // after it already updated the device's JoinNonce; its savepoint must undo that update.
    const sameSessionId = (devNonce: number) => (current: JoinState): JoinDecision<string> => {
      const joinNonce = current.lastJoinNonce + 1;
      return {
        commit: { ...current, lastJoinNonce: joinNonce, lastDevNonce: devNonce },
        session: makeSession(failing!.devEui, JOIN_EUI, joinNonce, devNonce, 'AAAAAAAA'),
      };
    };
    const auditBefore = committedAudit(f);
    f.groups.length = 0;
    const outcomes = await Promise.allSettled([
      f.storage.reserveJoin(accepted!.devEui, JOIN_EUI, acceptDevNonce(accepted!.devEui, JOIN_EUI, 7), { sessionLimit: 5 }),
      f.storage.reserveJoin(refused!.devEui, JOIN_EUI, () => ({ refuse: 'no' }), { sessionLimit: 5 }),
      f.storage.reserveJoin(throwing!.devEui, JOIN_EUI, () => { throw boom; }, { sessionLimit: 5 }),
      f.storage.reserveJoin(failing!.devEui, JOIN_EUI, sameSessionId(1), { sessionLimit: 5 }),
      f.storage.reserveJoin(failing!.devEui, JOIN_EUI, sameSessionId(2), { sessionLimit: 5 }),
    ]);
    assert.deepEqual(f.groups, [5]);
    assert.equal(outcomes[0]?.status, 'fulfilled');
    assert.deepEqual(outcomes[1], { status: 'fulfilled', value: { refused: 'no' } });
    assert.deepEqual(outcomes[2], { status: 'rejected', reason: boom });
    assert.equal(outcomes[3]?.status, 'fulfilled');
    assert.equal(outcomes[4]?.status, 'rejected');
    assert.ok(outcomes[4]?.status === 'rejected' && outcomes[4].reason instanceof StorageError && outcomes[4].reason.code === 'UNAVAILABLE');
    assert.equal(committedJoinNonce(f, accepted!.devEui), 1);
    assert.equal(committedJoinNonce(f, refused!.devEui), 0);
    assert.equal(committedJoinNonce(f, throwing!.devEui), 0);
    assert.equal(committedJoinNonce(f, failing!.devEui), 1, 'the failed second reservation left the JoinNonce of the first');
    assert.equal(committedSessions(f, failing!.devEui), 1);
    assert.equal(committedAudit(f), auditBefore + 1, 'only the accepted reservation wrote an audit event');
  });

  it('a commit that fails / every reservation of the group fails, nothing of the group is stored, the next group commits', async () => {
    const devices = Array.from({ length: 4 }, () => makeDevice());
    for (const d of devices) await f.storage.insertDevice(d);
    const poisoned = devices[2]!;
    // A real COMMIT failure: a deferred foreign key that a trigger violates when `poisoned` gets a session. SQLite
    // checks deferred constraints at COMMIT, so every statement of the group succeeds and only COMMIT fails.
    f.observer.exec(`create table commit_guard (dev_eui text references devices (dev_eui) deferrable initially deferred)`);
    f.observer.exec(`create trigger poison after insert on sessions when new.dev_eui = '${poisoned.devEui}'
      begin insert into commit_guard values ('FFFFFFFFFFFFFFFF'); end`);
    const auditBefore = committedAudit(f);
    f.groups.length = 0;
    const outcomes = await Promise.allSettled(
      devices.map((d) => f.storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, 1), { sessionLimit: 5 })),
    );
    assert.deepEqual(f.groups, [], 'no group was committed');
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected');
      assert.ok(o.status === 'rejected' && o.reason instanceof StorageError && o.reason.code === 'UNAVAILABLE');
      assert.match(o.reason.message, /FOREIGN KEY constraint failed/, 'failed at COMMIT, on the deferred constraint');
    }
    for (const d of devices) {
      assert.equal(committedJoinNonce(f, d.devEui), 0);
      assert.equal(committedSessions(f, d.devEui), 0);
      assert.deepEqual(await f.storage.getJoinState(d.devEui, JOIN_EUI), { lastJoinNonce: 0, lastDevNonce: null, usedDevNonces: [], lastRjCount1: null });
    }
    assert.equal(committedAudit(f), auditBefore);

    f.observer.exec('drop trigger poison');
    const retried = await Promise.all(
      devices.map((d) => f.storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, 1), { sessionLimit: 5 })),
    );
    assert.deepEqual(f.groups, [4]);
    for (const r of retried) assert.ok('committed' in r && r.committed.lastJoinNonce === 1, 'the same DevNonce is accepted: the failed group burnt nothing');
  });

  it('group size / starts at minGroupSize, doubles while requests are left waiting, halves back once the queue empties', async () => {
    const { storage, groups, cleanup } = await openFixture({});
    try {
      const devices = Array.from({ length: 70 }, () => makeDevice());
      for (const d of devices) await storage.insertDevice(d);
      const reserveAll = (devNonce: number) =>
        Promise.all(devices.map((d) => storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, devNonce), { sessionLimit: 3 })));
      const first = await reserveAll(1);
      // 16 taken, 54 left: 32 next, 22 left: 64 allowed, the 22 taken, queue empty.
      assert.deepEqual(groups, [16, 32, 22]);
      const second = await reserveAll(2);
      // After the empty queue 64 → 32: 32 taken, 38 left: 64 allowed, the 38 taken.
      assert.deepEqual(groups.slice(3), [32, 38]);
      assert.ok([...first, ...second].every((r) => 'committed' in r), 'every reservation committed once');
      assert.deepEqual(second.map((r) => ('committed' in r ? r.committed.lastJoinNonce : r.refused)), devices.map(() => 2));
    } finally {
      await cleanup();
    }
  });

  it('reservations that bring their seen state / the next group waits for the commit in flight, so what arrives meanwhile joins it', async () => {
    const { storage, groups, cleanup } = await openFixture({});
    try {
      const devices = Array.from({ length: 25 }, () => makeDevice());
      for (const d of devices) await storage.insertDevice(d);
      const seen = await Promise.all(devices.map(async (d) => (await storage.getDeviceForJoin(d.devEui))!.seen));
      const reserve = (i: number) => storage.reserveJoin(devices[i]!.devEui, JOIN_EUI, acceptDevNonce(devices[i]!.devEui, JOIN_EUI, 1), { sessionLimit: 3, seen: seen[i] });
      // One turn: 20 reservations. The first group takes 16 and is posted to the writer thread in the turn after.
      const first = Array.from({ length: 20 }, (_, i) => reserve(i));
      // Queued behind that turn: 5 more, arriving while the first group's commit (an fsync) is in the writer thread.
      const later = await new Promise<Promise<ReserveJoinResult<unknown>>[]>((resolve) => setImmediate(() => resolve(Array.from({ length: 5 }, (_, i) => reserve(20 + i)))));
      const results = await Promise.all([...first, ...later]);
      // Taken before that commit ended, the second group would hold the 4 left of the first turn and the 5 would need a third.
      assert.deepEqual(groups, [16, 9]);
      assert.ok(results.every((r) => 'committed' in r && r.committed.lastJoinNonce === 1), 'every reservation committed once');
    } finally {
      await cleanup();
    }
  });

  it('more reservations than the group limit / split into groups, all committed once', async () => {
    const { storage, groups, cleanup } = await openFixture({ maxGroupSize: 4 });
    try {
      const device = makeDevice();
      await storage.insertDevice(device);
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, i), { sessionLimit: 3 })),
      );
      assert.deepEqual(groups, [4, 4, 2]);
      assert.deepEqual(results.map((r) => ('committed' in r ? r.committed.lastJoinNonce : r.refused)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      assert.equal((await storage.listSessions(device.devEui)).length, 3);
    } finally {
      await cleanup();
    }
  });

  it('another connection holds the write lock / the group waits off the event loop, then commits once it is released', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'joinkeep-group-'));
    const path = join(dir, 'joinkeep.db');
    let busy = 0;
    const groups: number[] = [];
    const storage = await openSqliteStorage(path, { onBusy: () => void busy++, onGroupCommitted: (n) => groups.push(n) });
    const other = new BetterSqlite3(path);
    try {
      await storage.migrate();
      const device = makeDevice();
      await storage.insertDevice(device);
      other.exec('begin immediate');
      let settled = false;
      const first = storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 1), { sessionLimit: 3 }).finally(() => (settled = true));
      // Timers keep firing while the lock is held elsewhere: the wait does not block the event loop.
      let ticks = 0;
      while (busy < 3 && !settled) {
        await new Promise((r) => setTimeout(r, 5));
        ticks++;
      }
      assert.ok(ticks > 0);
      assert.equal(settled, false, 'no answer while the reservation cannot commit');
      // Requests arriving meanwhile join the waiting group: once it has found the lock taken again, it holds them too.
      // Two reports: the group in flight when they arrived was formed without them (no wall-clock wait, which a busy
      // machine can outlast, so the lock would be released while they were still apart).
      const busyWhenQueued = busy;
      const second = storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 2), { sessionLimit: 3 });
      const audit = storage.appendAudit({ at: new Date(), actor: 'test', action: 'join.refuse', subject: `device/${device.devEui}`, outcome: 'MICFailed', details: {} });
      while (busy < busyWhenQueued + 2) await new Promise((r) => setTimeout(r, 1));
      other.exec('commit');
      const results = await Promise.all([first, second]);
      await audit;
      assert.deepEqual(results.map((r) => ('committed' in r ? r.committed.lastJoinNonce : r.refused)), [1, 2]);
      assert.deepEqual(groups, [3], 'both reservations and the audit event in one group');
      assert.equal((other.prepare("select count(*) as n from audit_events where action = 'join.refuse'").get() as { n: number }).n, 1);
    } finally {
      if (other.inTransaction) other.exec('rollback');
      other.close();
      await storage.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('another connection writes the device between the read and the commit / not written, decided again on the new row', async () => {
    const device = makeDevice();
    await f.storage.insertDevice(device);
    f.groups.length = 0;
    const seen: number[] = [];
    const accept = acceptDevNonce(device.devEui, JOIN_EUI, 9);
    // decide runs on the main thread after the writer thread read the row and before the group's transaction: the
    // moment another process could issue JoinNonces for the same device.
    const decide = (current: JoinState): JoinDecision<string> => {
      seen.push(current.lastJoinNonce);
      if (seen.length === 1) f.observer.prepare('update devices set last_join_nonce = last_join_nonce + 5 where dev_eui = ?').run(device.devEui);
      return accept(current);
    };
    const result = await f.storage.reserveJoin(device.devEui, JOIN_EUI, decide, { sessionLimit: 5 });
    assert.deepEqual(seen, [0, 5], 'decided twice: first on the stale row, then on the row the other connection left');
    assert.ok('committed' in result && result.committed.lastJoinNonce === 6);
    assert.equal(committedJoinNonce(f, device.devEui), 6, 'JoinNonce 1 (decided on the stale row) was never written');
    assert.equal(committedSessions(f, device.devEui), 1);
    assert.deepEqual(f.groups, [0, 1], 'the stale group wrote nothing; the next one wrote the reservation');
  });

  it('audit events appended in one turn / ride in one group with the reservations of that turn', async () => {
    const device = makeDevice();
    await f.storage.insertDevice(device);
    const before = committedAudit(f);
    f.groups.length = 0;
    const event = (i: number) => ({ at: new Date(), actor: 'test', action: 'join.refuse', subject: `device/${device.devEui}`, outcome: 'MICFailed', details: { i } });
    await Promise.all([
      f.storage.appendAudit(event(1)),
      f.storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 7), { sessionLimit: 5 }),
      f.storage.appendAudit(event(2)),
    ]);
    assert.deepEqual(f.groups, [3]);
    assert.equal(committedAudit(f), before + 3, 'two refusals and the accepted join');
  });
});
