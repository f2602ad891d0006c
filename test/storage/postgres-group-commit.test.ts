import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { Eui64 } from '../../src/protocol/index.js';
import {
  type JoinDecision,
  type JoinState,
  type PostgresStorage,
  type PostgresStorageOptions,
  type ReserveJoinResult,
  StorageError,
  openPostgresStorage,
} from '../../src/storage/index.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { JOIN_EUI, acceptDevNonce, assertGroupCommitsObserved, makeDevice, makeSession } from '../helpers/storage-fixtures.js';

/*
 * Group commit on PostgreSQL (docs/storage.md "Group commit"): reservations issued in the same turn of the event loop
 * share one transaction, locked FOR UPDATE in dev_eui order; a group the server refuses is committed again one
 * reservation at a time. Observed through a separate connection, which only ever sees committed data, and through
 * the storage's onGroupCommitted hook. No timing is asserted.
 */

interface Fixture {
  readonly url: string;
  readonly storage: PostgresStorage;
  /** A connection of its own: sees only what was committed. */
  readonly observer: pg.Client;
  readonly groups: number[];
  open(options?: PostgresStorageOptions): Promise<{ storage: PostgresStorage; groups: number[] }>;
  cleanup(): Promise<void>;
}

async function openFixture(): Promise<Fixture> {
  const database = await createTestDatabase();
  const opened: PostgresStorage[] = [];
  const open = async (options: PostgresStorageOptions = {}) => {
    const groups: number[] = [];
    const storage = await openPostgresStorage(database.url, { maxConnections: 4, onGroupCommitted: (n) => groups.push(n), ...options });
    opened.push(storage);
    return { storage, groups };
  };
  const { storage, groups } = await open();
  await storage.migrate();
  const observer = new pg.Client({ connectionString: database.url });
  await observer.connect();
  return {
    url: database.url,
    storage,
    observer,
    groups,
    open,
    async cleanup() {
      await observer.end();
      for (const s of opened) await s.close();
      await database.drop();
    },
  };
}

async function committedJoinNonce(f: Fixture, devEui: Eui64): Promise<number> {
  const { rows } = await f.observer.query<{ n: number }>('select last_join_nonce as n from devices where dev_eui = $1', [devEui]);
  return rows[0]!.n;
}
async function committedSessions(f: Fixture, devEui: Eui64): Promise<number[]> {
  const { rows } = await f.observer.query<{ n: number }>('select join_nonce as n from sessions where dev_eui = $1 order by seq', [devEui]);
  return rows.map((r) => r.n);
}
async function committedAudit(f: Fixture): Promise<number> {
  const { rows } = await f.observer.query<{ n: string }>('select count(*) as n from audit_events');
  return Number(rows[0]!.n);
}

const limit = { sessionLimit: 5 };
const initial: JoinState = { lastJoinNonce: 0, lastDevNonce: null, usedDevNonces: [], lastRjCount1: null };

/** A 1.0.x-style decision: each DevNonce once, in any order (concurrent instances may see them out of order). */
function acceptUnused(devEui: Eui64, devNonce: number, sessionLimit = 1000) {
  return (current: JoinState): JoinDecision<string> => {
    if (current.usedDevNonces.includes(devNonce)) return { refuse: 'DevNonceReplayed' };
    const joinNonce = current.lastJoinNonce + 1;
    return {
      commit: { ...current, lastJoinNonce: joinNonce, usedDevNonces: [...current.usedDevNonces, devNonce].slice(-sessionLimit) },
      // A SessionKeyID of its own, as real ones are: unique (dev_eui, session_key_id) must not be what stops a JoinNonce
      // from being issued twice.
      session: makeSession(devEui, JOIN_EUI, joinNonce, devNonce, randomBytes(4).toString('hex').toUpperCase()),
    };
  };
}

describe('postgres / group commit', () => {
  let f: Fixture;
  before(async () => {
    f = await openFixture();
  });
  after(async () => {
    await f.cleanup();
  });

  it('reservations issued together / one transaction, each resolved only once its commit is visible to another connection', async () => {
    const devices = Array.from({ length: 10 }, () => makeDevice());
    for (const d of devices) await f.storage.insertDevice(d);
    f.groups.length = 0;
    const seenAtResolve: Promise<{ devEui: Eui64; stored: number; sessions: number }>[] = [];
    // Per device: DevNonce 1, DevNonce 2, then DevNonce 1 again (a replay of an earlier member of the same group).
    const pending = devices.flatMap((d) =>
      [1, 2, 1].map((devNonce) =>
        f.storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, devNonce), limit).then((r) => {
          if ('committed' in r) {
            seenAtResolve.push(
              Promise.all([committedJoinNonce(f, d.devEui), committedSessions(f, d.devEui)]).then(([stored, sessions]) => ({ devEui: d.devEui, stored, sessions: sessions.length })),
            );
          }
          return r;
        }),
      ),
    );
    const results = await Promise.all(pending);
    assert.deepEqual(f.groups, [30], 'all 30 reservations of this turn in one group');
    const seen = await Promise.all(seenAtResolve);
    assert.equal(seen.length, 20);
    for (const s of seen) {
      // The whole group (both joins of the device) was committed before the first answer was released.
      assert.equal(s.stored, 2, `device ${s.devEui}: committed JoinNonce when its reservation resolved`);
      assert.equal(s.sessions, 2);
    }
    devices.forEach((d, i) => {
      const [first, second, replay] = results.slice(i * 3, i * 3 + 3) as ReserveJoinResult<string>[];
      assert.ok(first && 'committed' in first && first.committed.lastJoinNonce === 1, `device ${d.devEui}: first join JoinNonce 1`);
      assert.ok(second && 'committed' in second && second.committed.lastJoinNonce === 2, `device ${d.devEui}: second join JoinNonce 2`);
      assert.deepEqual(replay, { refused: 'DevNonceReplayed' });
    });
    for (const d of devices) {
      assert.deepEqual(await f.storage.getJoinState(d.devEui, JOIN_EUI), { lastJoinNonce: 2, lastDevNonce: 2, usedDevNonces: [1, 2], lastRjCount1: null });
      assert.deepEqual(await committedSessions(f, d.devEui), [1, 2], 'sessions in arrival order');
    }
  });

  it('observeGroupCommits / told each group that wrote, with its size and the time until its COMMIT; a group of refusals only is not reported', async () => {
    await assertGroupCommitsObserved(f.storage, f.groups);
  });

  it('a refusal, a throwing decision and an unknown device in one group / only those fail, without writing; the others commit', async () => {
    const [accepted, refused, throwing] = Array.from({ length: 3 }, () => makeDevice());
    for (const d of [accepted!, refused!, throwing!]) await f.storage.insertDevice(d);
    const boom = new Error('decide failed');
    const auditBefore = await committedAudit(f);
    f.groups.length = 0;
    const outcomes = await Promise.allSettled([
      f.storage.reserveJoin(accepted!.devEui, JOIN_EUI, acceptDevNonce(accepted!.devEui, JOIN_EUI, 7), limit),
      f.storage.reserveJoin(refused!.devEui, JOIN_EUI, () => ({ refuse: 'no' }), limit),
      f.storage.reserveJoin(throwing!.devEui, JOIN_EUI, () => { throw boom; }, limit),
      f.storage.reserveJoin(makeDevice().devEui, JOIN_EUI, acceptDevNonce(accepted!.devEui, JOIN_EUI, 1), limit),
    ]);
    assert.deepEqual(f.groups, [4]);
    assert.equal(outcomes[0]?.status, 'fulfilled');
    assert.deepEqual(outcomes[1], { status: 'fulfilled', value: { refused: 'no' } });
    assert.deepEqual(outcomes[2], { status: 'rejected', reason: boom });
    assert.ok(outcomes[3]?.status === 'rejected' && outcomes[3].reason instanceof StorageError && outcomes[3].reason.code === 'DEVICE_NOT_FOUND');
    assert.equal(await committedJoinNonce(f, accepted!.devEui), 1);
    for (const d of [refused!, throwing!]) {
      assert.equal(await committedJoinNonce(f, d.devEui), 0);
      assert.deepEqual(await committedSessions(f, d.devEui), []);
      assert.deepEqual(await f.storage.getJoinState(d.devEui, JOIN_EUI), initial);
    }
    assert.equal(await committedAudit(f), auditBefore + 1, 'only the accepted reservation wrote an audit event');
  });

  it('a write the server refuses / the group is rolled back and each reservation committed alone: only the faulty one fails', async () => {
    const [accepted, failing] = Array.from({ length: 2 }, () => makeDevice());
    for (const d of [accepted!, failing!]) await f.storage.insertDevice(d);
    // Two reservations of `failing` with the same SessionKeyID: together they violate unique (dev_eui, session_key_id).
    const sameSessionId = (devNonce: number) => (current: JoinState): JoinDecision<string> => {
      const joinNonce = current.lastJoinNonce + 1;
      return {
        commit: { ...current, lastJoinNonce: joinNonce, lastDevNonce: devNonce },
        session: makeSession(failing!.devEui, JOIN_EUI, joinNonce, devNonce, 'AAAAAAAA'),
      };
    };
    const auditBefore = await committedAudit(f);
    f.groups.length = 0;
    const outcomes = await Promise.allSettled([
      f.storage.reserveJoin(accepted!.devEui, JOIN_EUI, acceptDevNonce(accepted!.devEui, JOIN_EUI, 7), limit),
      f.storage.reserveJoin(failing!.devEui, JOIN_EUI, sameSessionId(1), limit),
      f.storage.reserveJoin(failing!.devEui, JOIN_EUI, sameSessionId(2), limit),
    ]);
    assert.deepEqual(f.groups, [], 'the group was not committed; its reservations were, one by one');
    assert.ok(outcomes[0]?.status === 'fulfilled' && 'committed' in outcomes[0].value && outcomes[0].value.committed.lastJoinNonce === 1);
    assert.ok(outcomes[1]?.status === 'fulfilled' && 'committed' in outcomes[1].value && outcomes[1].value.committed.lastJoinNonce === 1);
    assert.ok(outcomes[2]?.status === 'rejected' && outcomes[2].reason instanceof StorageError && outcomes[2].reason.code === 'UNAVAILABLE');
    assert.equal(await committedJoinNonce(f, accepted!.devEui), 1, 'written once: the rolled-back group left nothing');
    assert.deepEqual(await committedSessions(f, accepted!.devEui), [1]);
    assert.equal(await committedJoinNonce(f, failing!.devEui), 1, 'the failed second reservation left the JoinNonce of the first');
    assert.deepEqual(await committedSessions(f, failing!.devEui), [1]);
    assert.equal(await committedAudit(f), auditBefore + 1);
  });

  it('a COMMIT the server refuses / nothing of the group is stored; alone, only the poisoned reservation fails', async () => {
    const devices = Array.from({ length: 4 }, () => makeDevice());
    for (const d of devices) await f.storage.insertDevice(d);
    const poisoned = devices[2]!;
    // A real COMMIT failure: a deferred foreign key that a trigger violates when `poisoned` gets a session. PostgreSQL
    // checks deferred constraints at COMMIT, so every statement of the group succeeds and only COMMIT fails.
    await f.observer.query(`create table commit_guard (dev_eui text references devices (dev_eui) deferrable initially deferred)`);
    await f.observer.query(`create function poison() returns trigger language plpgsql as $$
      begin insert into commit_guard values ('FFFFFFFFFFFFFFFF'); return new; end $$`);
    await f.observer.query(`create trigger poison after insert on sessions for each row when (new.dev_eui = '${poisoned.devEui}') execute function poison()`);
    const auditBefore = await committedAudit(f);
    f.groups.length = 0;
    try {
      const outcomes = await Promise.allSettled(
        devices.map((d) => f.storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, 1), limit)),
      );
      assert.deepEqual(f.groups, [], 'no group was committed');
      outcomes.forEach((o, i) => {
        if (i === 2) {
          assert.ok(o.status === 'rejected' && o.reason instanceof StorageError && o.reason.code === 'UNAVAILABLE');
          assert.match(o.reason.message, /commit_guard/, 'failed at COMMIT, on the deferred constraint');
        } else {
          assert.ok(o.status === 'fulfilled' && 'committed' in o.value && o.value.committed.lastJoinNonce === 1);
        }
      });
      for (const d of devices) {
        assert.equal(await committedJoinNonce(f, d.devEui), d === poisoned ? 0 : 1);
        assert.deepEqual(await committedSessions(f, d.devEui), d === poisoned ? [] : [1]);
      }
      assert.deepEqual(await f.storage.getJoinState(poisoned.devEui, JOIN_EUI), initial);
      assert.equal(await committedAudit(f), auditBefore + 3);
    } finally {
      await f.observer.query('drop trigger poison on sessions; drop function poison(); drop table commit_guard');
    }
    const retried = await f.storage.reserveJoin(poisoned.devEui, JOIN_EUI, acceptDevNonce(poisoned.devEui, JOIN_EUI, 1), limit);
    assert.ok('committed' in retried && retried.committed.lastJoinNonce === 1, 'the same DevNonce is accepted: the failed group burnt nothing');
  });

  it('the group connection is lost / every reservation of the group fails, nothing is stored, the next group commits', async () => {
    const devices = Array.from({ length: 3 }, () => makeDevice());
    for (const d of devices) await f.storage.insertDevice(d);
    f.groups.length = 0;
    // Hold a lock the group's write needs, then end the group's connection while it waits for it.
    await f.observer.query('begin');
    await f.observer.query('lock table audit_events in exclusive mode');
    const outcomes = Promise.allSettled(devices.map((d) => f.storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, 1), limit)));
    let terminated = false;
    try {
      while (!terminated) {
        const { rows } = await f.observer.query<{ ended: boolean }>(
          `select pg_terminate_backend(pid) as ended from pg_stat_activity
            where datname = current_database() and pid <> pg_backend_pid() and wait_event_type = 'Lock'`,
        );
        terminated = rows.some((r) => r.ended);
        if (!terminated) await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      await f.observer.query('rollback');
    }
    for (const o of await outcomes) {
      assert.ok(o.status === 'rejected' && o.reason instanceof StorageError && o.reason.code === 'UNAVAILABLE', 'no fallback: alone each would meet the same fault');
    }
    assert.deepEqual(f.groups, []);
    for (const d of devices) assert.equal(await committedJoinNonce(f, d.devEui), 0);
    const again = await Promise.all(devices.map((d) => f.storage.reserveJoin(d.devEui, JOIN_EUI, acceptDevNonce(d.devEui, JOIN_EUI, 1), limit)));
    assert.deepEqual(f.groups, [3]);
    for (const r of again) assert.ok('committed' in r && r.committed.lastJoinNonce === 1);
  });

  it('more reservations than the group limit / split into groups, all committed once, sessions pruned to the limit', async () => {
    const { storage, groups } = await f.open({ maxGroupSize: 4 });
    const device = makeDevice();
    await storage.insertDevice(device);
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, i), { sessionLimit: 3 })),
    );
    assert.deepEqual(groups, [4, 4, 2]);
    assert.deepEqual(results.map((r) => ('committed' in r ? r.committed.lastJoinNonce : r.refused)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // Groups of 4 with a limit of 3: some of a group's own new sessions are pruned too (the second statement).
    assert.deepEqual(await committedSessions(f, device.devEui), [8, 9, 10]);
  });

  it('different session limits in one group / the sessions kept are those one reservation at a time would keep', async () => {
    const device = makeDevice();
    await f.storage.insertDevice(device);
    await Promise.all([1, 2, 3].map((n) => f.storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, n), limit)));
    assert.deepEqual(await committedSessions(f, device.devEui), [1, 2, 3]);
    // One at a time: limit 1 keeps session 4 alone, then limit 5 adds session 5 → [4, 5]; then limit 2 → [5, 6].
    f.groups.length = 0;
    await Promise.all([
      f.storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 4), { sessionLimit: 1 }),
      f.storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 5), { sessionLimit: 5 }),
    ]);
    assert.deepEqual(f.groups, [2]);
    assert.deepEqual(await committedSessions(f, device.devEui), [4, 5]);
    await Promise.all([
      f.storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 6), { sessionLimit: 2 }),
      f.storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 7), { sessionLimit: 1 }).then(() => undefined),
    ]);
    // limit 2 → [5, 6], then limit 1 → [7].
    assert.deepEqual(await committedSessions(f, device.devEui), [7]);
  });

  it('a device with a reservation in a group in flight / its next reservation waits for a later group; other devices do not', async () => {
    const { storage, groups } = await f.open({ maxGroupsInFlight: 2 });
    const [a, b] = [makeDevice(), makeDevice()];
    await storage.insertDevice(a);
    await storage.insertDevice(b);
    const order: string[] = [];
    const seen: number[] = [];
    const first = storage.reserveJoin(a.devEui, JOIN_EUI, acceptDevNonce(a.devEui, JOIN_EUI, 1), limit).then((r) => (order.push('a1'), r));
    // The next turn: a1's group is in flight.
    await new Promise((r) => setImmediate(r));
    const decideA2 = acceptDevNonce(a.devEui, JOIN_EUI, 2);
    const second = storage
      .reserveJoin(a.devEui, JOIN_EUI, (current) => (seen.push(current.lastJoinNonce), decideA2(current)), limit)
      .then((r) => (order.push('a2'), r));
    const other = storage.reserveJoin(b.devEui, JOIN_EUI, acceptDevNonce(b.devEui, JOIN_EUI, 1), limit).then((r) => (order.push('b1'), r));
    const [r1, r2, r3] = await Promise.all([first, second, other]);
    assert.ok('committed' in r1 && r1.committed.lastJoinNonce === 1);
    assert.ok('committed' in r2 && r2.committed.lastJoinNonce === 2);
    assert.ok('committed' in r3 && r3.committed.lastJoinNonce === 1);
    assert.deepEqual(seen, [1], 'a2 decided on the state a1 committed');
    assert.ok(order.indexOf('a1') < order.indexOf('a2'));
    assert.deepEqual(groups, [1, 1, 1], 'b1 did not wait with a2 but went in a group of its own beside a1');
  });

  it('close / waits for the reservations already queued', async () => {
    const { storage } = await f.open();
    const device = makeDevice();
    await storage.insertDevice(device);
    const reserved = storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 1), limit);
    await storage.close();
    const r = await reserved;
    assert.ok('committed' in r && r.committed.lastJoinNonce === 1);
    assert.equal(await committedJoinNonce(f, device.devEui), 1);
  });

  it('two instances (two pools) on the same devices at once / each DevNonce accepted once, no JoinNonce issued twice, no deadlock', async () => {
    const instances = [await f.open({ maxGroupsInFlight: 2 }), await f.open({ maxGroupsInFlight: 2 })];
    const devices = Array.from({ length: 16 }, () => makeDevice());
    for (const d of devices) await f.storage.insertDevice(d);
    const DEV_NONCES = 12;
    const accepted = new Map<Eui64, { devNonce: number; joinNonce: number }[]>(devices.map((d) => [d.devEui, []]));
    let refused = 0;
    // Each instance sends every (device, DevNonce) once, in its own shuffled order, in bursts: groups hold many
    // devices, and the two instances lock overlapping sets of rows at the same time.
    const shuffled = <T,>(list: readonly T[]): T[] => list.map((x) => [Math.random(), x] as const).sort((p, q) => p[0] - q[0]).map(([, x]) => x);
    const work = devices.flatMap((d) => Array.from({ length: DEV_NONCES }, (_, n) => ({ d, n })));
    await Promise.all(
      instances.map(async ({ storage }) => {
        const mine = shuffled(work);
        for (let i = 0; i < mine.length; i += 24) {
          await Promise.all(
            mine.slice(i, i + 24).map(async ({ d, n }) => {
              const r = await storage.reserveJoin(d.devEui, JOIN_EUI, acceptUnused(d.devEui, n), { sessionLimit: 1000 });
              if ('committed' in r) accepted.get(d.devEui)!.push({ devNonce: n, joinNonce: r.committed.lastJoinNonce });
              else refused++;
            }),
          );
        }
      }),
    );
    assert.equal(refused, devices.length * DEV_NONCES, 'every second copy refused');
    for (const d of devices) {
      const mine = accepted.get(d.devEui)!;
      assert.deepEqual(mine.map((a) => a.devNonce).sort((p, q) => p - q), Array.from({ length: DEV_NONCES }, (_, n) => n), 'each DevNonce accepted exactly once');
      assert.deepEqual(mine.map((a) => a.joinNonce).sort((p, q) => p - q), Array.from({ length: DEV_NONCES }, (_, n) => n + 1), 'JoinNonces unique and contiguous from 1');
      assert.equal(await committedJoinNonce(f, d.devEui), DEV_NONCES);
      assert.deepEqual(await committedSessions(f, d.devEui), Array.from({ length: DEV_NONCES }, (_, n) => n + 1), 'one session per JoinNonce, in order');
    }
    const sizes = instances.flatMap((i) => i.groups);
    assert.ok(Math.max(...sizes) > 1, `groups of more than one reservation (sizes ${sizes.join(', ')})`);
  });
});
