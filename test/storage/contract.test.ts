import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import { eui64FromBeHex, netIdFromBeHex, type Eui64 } from '../../src/protocol/index.js';
import {
  PEER_LOOKUP_TTL_MS,
  StorageError,
  openPostgresStorage,
  openSqliteStorage,
  openStorage,
  type AuditEvent,
  type JoinDecision,
  type JoinState,
  type PeerRecord,
  type Storage,
  type StorageErrorCode,
} from '../../src/storage/index.js';
import { storageBackends, type OpenedStorage, type StorageBackend } from '../helpers/storages.js';
import {
  JOIN_EUI,
  NET_ID,
  OTHER_JOIN_EUI,
  acceptDevNonce,
  at,
  makeDevice,
  makeSession,
  randomEui,
} from '../helpers/storage-fixtures.js';

/*
 * The storage contract (src/storage/storage.ts), run against every backend with the same assertions
 * (STYLE rule 4). Each backend block shares one database; tests that need an empty one open their own.
 */

const failsWith = (code: StorageErrorCode) => (error: unknown) => {
  assert.ok(error instanceof StorageError, `expected a StorageError, got ${String(error)}`);
  assert.equal(error.code, code);
  return true;
};

async function withFresh(backend: StorageBackend, run: (opened: OpenedStorage) => Promise<void>): Promise<void> {
  const opened = await backend.open();
  try {
    await run(opened);
  } finally {
    await opened.cleanup();
  }
}

/** Runs SQL outside the storage, to look at or tamper with what it wrote. */
async function rawExecute(opened: OpenedStorage, text: string): Promise<unknown[]> {
  if (opened.path !== undefined) {
    const db = new BetterSqlite3(opened.path);
    try {
      const stmt = db.prepare(text);
      return stmt.reader ? stmt.all() : (stmt.run(), []);
    } finally {
      db.close();
    }
  }
  const client = new pg.Client({ connectionString: opened.url });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

/** Everything reserveJoin may touch for a device, to compare before and after. */
async function snapshot(storage: Storage, devEui: Eui64, joinEui: Eui64) {
  return {
    device: await storage.getDevice(devEui),
    joinState: await storage.getJoinState(devEui, joinEui),
    sessions: await storage.listSessions(devEui),
    audit: (await storage.listAudit({ subject: `device/${devEui}`, limit: 1000 })).items,
  };
}

function peer(overrides: Partial<PeerRecord> & Pick<PeerRecord, 'id'>): PeerRecord {
  return {
    kind: 'ns',
    netId: NET_ID,
    nsId: null,
    asId: null,
    tokenSha256: null,
    clientCertSha256: null,
    kekLabel: null,
    allowClearKeys: false,
    createdAt: at(),
    ...overrides,
  };
}

const sha = (fill: string): string => fill.repeat(64);

for (const backend of storageBackends) {
  describe(backend.name, () => {
    let opened: OpenedStorage;
    let storage: Storage;
    before(async () => {
      opened = await backend.open();
      storage = opened.storage;
    });
    after(async () => {
      await opened.cleanup();
    });

    it('kind / names the backend', () => {
      assert.equal(storage.kind, backend.name);
    });

    describe('devices', () => {
      it('insert then get / round-trips every field of a 1.1 device', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        assert.deepEqual(await storage.getDevice(device.devEui), device);
      });

      it('insert then get / round-trips nulls of a 1.0.2 device and an empty roaming list', async () => {
        const bare = makeDevice({ macVersion: '1.0.2', nwkKeyHandle: null, homeNsId: null, asId: null, roamingNetIds: null });
        const emptyRoaming = makeDevice({ roamingNetIds: [] });
        await storage.insertDevice(bare);
        await storage.insertDevice(emptyRoaming);
        assert.deepEqual(await storage.getDevice(bare.devEui), bare);
        assert.deepEqual(await storage.getDevice(emptyRoaming.devEui), emptyRoaming);
      });

      it('get / unknown DevEUI / undefined', async () => {
        assert.equal(await storage.getDevice(randomEui()), undefined);
      });

      it('insert / existing DevEUI / DEVICE_EXISTS, first record kept', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        await assert.rejects(storage.insertDevice({ ...device, asId: 'other' }), failsWith('DEVICE_EXISTS'));
        assert.deepEqual(await storage.getDevice(device.devEui), device);
      });

      it('insert / lower-case EUI / refused by the schema (canonical hex only)', async () => {
        const device = makeDevice({ devEui: 'abcdef0123456789' as Eui64 });
        await assert.rejects(storage.insertDevice(device), StorageError);
      });

      it('delete / removes the device with its join state and sessions, keeps its audit events', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 1), { sessionLimit: 5 });
        assert.equal(await storage.deleteDevice(device.devEui), true);
        assert.equal(await storage.getDevice(device.devEui), undefined);
        assert.deepEqual(await storage.listSessions(device.devEui), []);
        assert.equal((await storage.listAudit({ subject: `device/${device.devEui}` })).items.length, 1);
        // Re-created under the same DevEUI, it starts from the initial join state.
        await storage.insertDevice(device);
        assert.deepEqual(await storage.getJoinState(device.devEui, JOIN_EUI), {
          lastJoinNonce: 0,
          lastDevNonce: null,
          usedDevNonces: [],
          lastRjCount1: null,
        });
      });

      it('delete / unknown DevEUI / false', async () => {
        assert.equal(await storage.deleteDevice(randomEui()), false);
      });

      it('servesJoinEui / true while a device uses it, false after the last one is deleted', async () => {
        const joinEui = randomEui();
        assert.equal(await storage.servesJoinEui(joinEui), false);
        const a = makeDevice({ joinEui });
        const b = makeDevice({ joinEui });
        await storage.insertDevice(a);
        await storage.insertDevice(b);
        assert.equal(await storage.servesJoinEui(joinEui), true);
        await storage.deleteDevice(a.devEui);
        assert.equal(await storage.servesJoinEui(joinEui), true);
        await storage.deleteDevice(b.devEui);
        assert.equal(await storage.servesJoinEui(joinEui), false);
      });

      it('list / pages in DevEUI order with an opaque cursor until no next', async () => {
        await withFresh(backend, async ({ storage }) => {
          const devices = Array.from({ length: 5 }, () => makeDevice()).sort((x, y) => x.devEui.localeCompare(y.devEui));
          for (const d of devices) await storage.insertDevice(d);
          const first = await storage.listDevices({ limit: 2 });
          assert.deepEqual(first.items, devices.slice(0, 2));
          assert.ok(first.next);
          const second = await storage.listDevices({ limit: 2, after: first.next });
          assert.deepEqual(second.items, devices.slice(2, 4));
          assert.ok(second.next);
          const third = await storage.listDevices({ limit: 2, after: second.next });
          assert.deepEqual(third.items, devices.slice(4));
          assert.equal(third.next, undefined);
          assert.deepEqual(await storage.listDevices(), { items: devices });
        });
      });

      it('list / default page size is 100', async () => {
        await withFresh(backend, async ({ storage }) => {
          for (let i = 0; i < 101; i++) await storage.insertDevice(makeDevice());
          const page = await storage.listDevices();
          assert.equal(page.items.length, 100);
          assert.ok(page.next);
          assert.equal((await storage.listDevices({ after: page.next })).items.length, 1);
          assert.equal((await storage.listDevices({ limit: 5000 })).items.length, 101);
        });
      });

      it('list / empty database / no items, no next', async () => {
        await withFresh(backend, async ({ storage }) => {
          assert.deepEqual(await storage.listDevices(), { items: [] });
        });
      });

      it('list / malformed cursor / RangeError', async () => {
        await assert.rejects(storage.listDevices({ after: 'not-a-cursor' }), RangeError);
      });
    });

    describe('getJoinState', () => {
      it('never joined / initial state', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        assert.deepEqual(await storage.getJoinState(device.devEui, JOIN_EUI), {
          lastJoinNonce: 0,
          lastDevNonce: null,
          usedDevNonces: [],
          lastRjCount1: null,
        });
      });

      it('unknown device / DEVICE_NOT_FOUND', async () => {
        await assert.rejects(storage.getJoinState(randomEui(), JOIN_EUI), failsWith('DEVICE_NOT_FOUND'));
      });
    });

    describe('reserveJoin', () => {
      it('committed / writes JoinNonce, DevNonce state, session and audit event', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        const decide = acceptDevNonce(device.devEui, JOIN_EUI, 7);
        const expected = decide({ lastJoinNonce: 0, lastDevNonce: null, usedDevNonces: [], lastRjCount1: null });
        assert.ok('commit' in expected);

        const result = await storage.reserveJoin(device.devEui, JOIN_EUI, decide, { sessionLimit: 3 });

        assert.deepEqual(result, { committed: expected.commit, session: expected.session });
        assert.deepEqual(await storage.getJoinState(device.devEui, JOIN_EUI), expected.commit);
        assert.deepEqual(await storage.getSession(device.devEui, expected.session.sessionKeyId), expected.session);
        const audit = (await storage.listAudit({ subject: `device/${device.devEui}` })).items;
        assert.equal(audit.length, 1);
        const { id, ...event } = audit[0] as AuditEvent;
        assert.equal(typeof id, 'number');
        assert.deepEqual(event, expected.audit);
      });

      it('committed / RJcount1 and used DevNonces round-trip', async () => {
        const device = makeDevice({ macVersion: '1.0.2' });
        await storage.insertDevice(device);
        const state: JoinState = { lastJoinNonce: 1, lastDevNonce: 513, usedDevNonces: [65535, 0, 513], lastRjCount1: 65535 };
        await storage.reserveJoin(
          device.devEui,
          JOIN_EUI,
          () => ({ commit: state, session: makeSession(device.devEui, JOIN_EUI, 1, 513) }),
          { sessionLimit: 1 },
        );
        assert.deepEqual(await storage.getJoinState(device.devEui, JOIN_EUI), state);
      });

      it('committed / decide sees what the previous reservation committed', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 1), { sessionLimit: 5 });
        let seen: JoinState | undefined;
        await storage.reserveJoin(
          device.devEui,
          JOIN_EUI,
          (current) => {
            seen = current;
            return acceptDevNonce(device.devEui, JOIN_EUI, 2)(current);
          },
          { sessionLimit: 5 },
        );
        assert.deepEqual(seen, { lastJoinNonce: 1, lastDevNonce: 1, usedDevNonces: [1], lastRjCount1: null });
      });

      it('committed / one JoinNonce counter per device, DevNonce state per JoinEUI', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 10), { sessionLimit: 5 });
        const other = await storage.reserveJoin(
          device.devEui,
          OTHER_JOIN_EUI,
          acceptDevNonce(device.devEui, OTHER_JOIN_EUI, 3),
          { sessionLimit: 5 },
        );
        assert.ok('committed' in other);
        assert.equal(other.committed.lastJoinNonce, 2);
        assert.deepEqual(await storage.getJoinState(device.devEui, OTHER_JOIN_EUI), {
          lastJoinNonce: 2,
          lastDevNonce: 3,
          usedDevNonces: [3],
          lastRjCount1: null,
        });
        assert.deepEqual(await storage.getJoinState(device.devEui, JOIN_EUI), {
          lastJoinNonce: 2,
          lastDevNonce: 10,
          usedDevNonces: [10],
          lastRjCount1: null,
        });
      });

      it('refused / returns the reason, state unchanged', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 5), { sessionLimit: 5 });
        const before = await snapshot(storage, device.devEui, JOIN_EUI);

        const result = await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 5), { sessionLimit: 5 });

        assert.deepEqual(result, { refused: 'DevNonceReplayed' });
        assert.deepEqual(await snapshot(storage, device.devEui, JOIN_EUI), before);
      });

      it('decide throws / the error reaches the caller unchanged, state unchanged', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 1), { sessionLimit: 5 });
        const before = await snapshot(storage, device.devEui, JOIN_EUI);
        const thrown = new Error('custody unavailable');

        await assert.rejects(
          storage.reserveJoin(device.devEui, JOIN_EUI, () => { throw thrown; }, { sessionLimit: 5 }),
          (error) => error === thrown,
        );
        assert.deepEqual(await snapshot(storage, device.devEui, JOIN_EUI), before);
        // The device is not left locked.
        const next = await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 2), { sessionLimit: 5 });
        assert.ok('committed' in next);
      });

      it('commit that would reuse a JoinNonce / RangeError, state unchanged', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 1), { sessionLimit: 5 });
        const before = await snapshot(storage, device.devEui, JOIN_EUI);
        const reuse = (current: JoinState): JoinDecision<never> => ({
          commit: { ...current, lastDevNonce: 2 },
          session: makeSession(device.devEui, JOIN_EUI, current.lastJoinNonce, 2, 'FFFF0001'),
        });
        const mismatched = (current: JoinState): JoinDecision<never> => ({
          commit: { ...current, lastJoinNonce: current.lastJoinNonce + 1 },
          session: makeSession(device.devEui, JOIN_EUI, current.lastJoinNonce, 2, 'FFFF0002'),
        });
        await assert.rejects(storage.reserveJoin(device.devEui, JOIN_EUI, reuse, { sessionLimit: 5 }), RangeError);
        await assert.rejects(storage.reserveJoin(device.devEui, JOIN_EUI, mismatched, { sessionLimit: 5 }), RangeError);
        assert.deepEqual(await snapshot(storage, device.devEui, JOIN_EUI), before);
      });

      it('committed / keeps only the sessionLimit most recent sessions of the device', async () => {
        const device = makeDevice();
        const neighbour = makeDevice();
        await storage.insertDevice(device);
        await storage.insertDevice(neighbour);
        await storage.reserveJoin(neighbour.devEui, JOIN_EUI, acceptDevNonce(neighbour.devEui, JOIN_EUI, 1), { sessionLimit: 1 });
        for (let devNonce = 1; devNonce <= 4; devNonce++) {
          await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, devNonce), { sessionLimit: 2 });
        }
        assert.deepEqual(
          (await storage.listSessions(device.devEui)).map((s) => s.joinNonce),
          [4, 3],
        );
        assert.equal((await storage.listSessions(neighbour.devEui)).length, 1, 'other devices are not pruned');
      });

      it('unknown device / DEVICE_NOT_FOUND, decide not called', async () => {
        let called = false;
        await assert.rejects(
          storage.reserveJoin(randomEui(), JOIN_EUI, () => { called = true; return { refuse: 'x' }; }, { sessionLimit: 1 }),
          failsWith('DEVICE_NOT_FOUND'),
        );
        assert.equal(called, false);
      });

      it('sessionLimit below 1 / RangeError', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        await assert.rejects(
          storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 1), { sessionLimit: 0 }),
          RangeError,
        );
      });
    });

    describe('sessions', () => {
      it('getSession / unknown id or other device / undefined', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        const result = await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, 1), { sessionLimit: 5 });
        assert.ok('committed' in result);
        assert.equal(await storage.getSession(device.devEui, 'DEADBEEF'), undefined);
        assert.equal(await storage.getSession(randomEui(), result.session.sessionKeyId), undefined);
      });

      it('listSessions / most recent first; unknown device / empty', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        for (let devNonce = 1; devNonce <= 3; devNonce++) {
          await storage.reserveJoin(device.devEui, JOIN_EUI, acceptDevNonce(device.devEui, JOIN_EUI, devNonce), { sessionLimit: 10 });
        }
        assert.deepEqual(
          (await storage.listSessions(device.devEui)).map((s) => s.devNonce),
          [3, 2, 1],
        );
        assert.deepEqual(await storage.listSessions(randomEui()), []);
      });
    });

    describe('peers', () => {
      it('insert and find / by token hash, certificate fingerprint, NetID and AS-ID, every field round-trips', async () => {
        await withFresh(backend, async ({ storage }) => {
          const nsA = peer({ id: 'ns/000013/00800000A0000001', nsId: eui64FromBeHex('00800000A0000001'), tokenSha256: sha('a'), kekLabel: 'kek-ns-13' });
          const nsB = peer({ id: 'ns/000013', clientCertSha256: sha('b'), allowClearKeys: true });
          const nsOther = peer({ id: 'ns/60002D', netId: netIdFromBeHex('60002D'), tokenSha256: sha('c') });
          const as = peer({ id: 'as/as-1', kind: 'as', netId: null, asId: 'as-1', tokenSha256: sha('d'), clientCertSha256: sha('e'), kekLabel: 'kek-as-1' });
          for (const p of [nsA, nsB, nsOther, as]) await storage.insertPeer(p);

          assert.deepEqual(await storage.findPeerByTokenSha256(sha('a')), nsA);
          assert.deepEqual(await storage.findPeerByClientCertSha256(sha('b')), nsB);
          assert.deepEqual(await storage.findPeerByClientCertSha256(sha('e')), as);
          assert.deepEqual(await storage.findNetworkServers(NET_ID), [nsB, nsA]);
          assert.deepEqual(await storage.findNetworkServers(netIdFromBeHex('60002D')), [nsOther]);
          assert.deepEqual(await storage.findApplicationServer('as-1'), as);
          assert.deepEqual(await storage.listPeers(), [as, nsB, nsA, nsOther]);
        });
      });

      it('find / unknown token, fingerprint, NetID, AS-ID / nothing', async () => {
        assert.equal(await storage.findPeerByTokenSha256(sha('9')), undefined);
        assert.equal(await storage.findPeerByClientCertSha256(sha('9')), undefined);
        assert.deepEqual(await storage.findNetworkServers(netIdFromBeHex('FFFFFF')), []);
        assert.equal(await storage.findApplicationServer('nobody'), undefined);
      });

      it('find after insert / a look-up that found nothing is not kept past a write of this storage', async () => {
        await withFresh(backend, async ({ storage }) => {
          const ns = peer({ id: 'ns/0000AA', netId: netIdFromBeHex('0000AA'), tokenSha256: sha('1'), clientCertSha256: sha('2') });
          const as = peer({ id: 'as/as-late', kind: 'as', netId: null, asId: 'as-late' });
          assert.equal(await storage.findPeerByTokenSha256(sha('1')), undefined);
          assert.equal(await storage.findPeerByClientCertSha256(sha('2')), undefined);
          assert.equal(await storage.findApplicationServer('as-late'), undefined);
          await storage.insertPeer(ns);
          await storage.insertPeer(as);
          assert.deepEqual(await storage.findPeerByTokenSha256(sha('1')), ns);
          assert.deepEqual(await storage.findPeerByClientCertSha256(sha('2')), ns);
          assert.deepEqual(await storage.findApplicationServer('as-late'), as);
        });
      });

      it('find / a peer registered by another instance on the same database is found within PEER_LOOKUP_TTL_MS', async () => {
        await withFresh(backend, async (first) => {
          const second = first.path !== undefined ? await openSqliteStorage(first.path) : await openPostgresStorage(first.url!, { maxConnections: 2 });
          try {
            assert.equal(await second.findPeerByTokenSha256(sha('3')), undefined, 'nothing yet, and that answer is now kept');
            const ns = peer({ id: 'ns/0000AB', netId: netIdFromBeHex('0000AB'), tokenSha256: sha('3') });
            await first.storage.insertPeer(ns);
            const registered = performance.now();
            let found = await second.findPeerByTokenSha256(sha('3'));
            while (found === undefined && performance.now() - registered < PEER_LOOKUP_TTL_MS + 5_000) {
              await new Promise((resolve) => setTimeout(resolve, 50));
              found = await second.findPeerByTokenSha256(sha('3'));
            }
            // Within the TTL, plus a margin for a loaded machine: never kept for good.
            assert.deepEqual(found, ns);
          } finally {
            await second.close();
          }
        });
      });

      it('insert / duplicate id / PEER_EXISTS', async () => {
        await storage.insertPeer(peer({ id: 'ns/00DUP1' }));
        await assert.rejects(storage.insertPeer(peer({ id: 'ns/00DUP1' })), failsWith('PEER_EXISTS'));
      });

      it('insert / token or certificate already used by another peer / PEER_EXISTS', async () => {
        await storage.insertPeer(peer({ id: 'ns/00DUP2', tokenSha256: sha('7'), clientCertSha256: sha('8') }));
        await assert.rejects(storage.insertPeer(peer({ id: 'ns/00DUP3', tokenSha256: sha('7') })), failsWith('PEER_EXISTS'));
        await assert.rejects(storage.insertPeer(peer({ id: 'ns/00DUP4', clientCertSha256: sha('8') })), failsWith('PEER_EXISTS'));
      });
    });

    describe('key records', () => {
      it('insert, get, list without the sealed bytes, delete', async () => {
        await withFresh(backend, async ({ storage }) => {
          const root = { handle: 'root/0004A30B001C0530/AppKey/01', usage: 'root' as const, sealed: Buffer.from([0, 1, 2, 255, 0]), createdAt: at(1) };
          const kek = { handle: 'kek/ns-000013', usage: 'kek' as const, sealed: Buffer.alloc(60, 0xa5), createdAt: at(2) };
          await storage.insertKeyRecord(root);
          await storage.insertKeyRecord(kek);
          assert.deepEqual(await storage.getKeyRecord(root.handle), root);
          assert.deepEqual(await storage.listKeyRecords(), [
            { handle: kek.handle, usage: 'kek', createdAt: kek.createdAt },
            { handle: root.handle, usage: 'root', createdAt: root.createdAt },
          ]);
          assert.equal(await storage.deleteKeyRecord(root.handle), true);
          assert.equal(await storage.deleteKeyRecord(root.handle), false);
          assert.equal(await storage.getKeyRecord(root.handle), undefined);
        });
      });

      it('insert / existing handle / KEY_RECORD_EXISTS', async () => {
        const record = { handle: 'kek/dup', usage: 'kek' as const, sealed: Buffer.from('x'), createdAt: at() };
        await storage.insertKeyRecord(record);
        await assert.rejects(storage.insertKeyRecord(record), failsWith('KEY_RECORD_EXISTS'));
      });
    });

    describe('audit', () => {
      it('append then list / oldest first, ids increase, details round-trip', async () => {
        await withFresh(backend, async ({ storage }) => {
          const events: AuditEvent[] = [
            { at: at(1), actor: 'cli', action: 'device.add', subject: 'device/A', outcome: 'success', details: { macVersion: '1.1' } },
            { at: at(2), actor: 'ns/000013', action: 'join.refuse', subject: 'device/A', outcome: 'MICFailed', details: { nested: { n: 1, list: [1, 'two', null] } } },
            { at: at(3), actor: 'cli', action: 'peer.add', subject: 'peer/ns/000013', outcome: 'success', details: {} },
          ];
          for (const e of events) await storage.appendAudit(e);
          const { items, next } = await storage.listAudit();
          assert.equal(next, undefined);
          assert.deepEqual(items.map(({ id: _id, ...rest }) => rest), events);
          const ids = items.map((e) => e.id as number);
          assert.deepEqual([...ids].sort((a, b) => a - b), ids);
          assert.equal(new Set(ids).size, 3);
        });
      });

      it('list / filters by subject and by action, pages with the filter applied', async () => {
        await withFresh(backend, async ({ storage }) => {
          for (let i = 0; i < 7; i++) {
            await storage.appendAudit({ at: at(i), actor: 'system', action: i % 2 === 0 ? 'join.accept' : 'join.refuse', subject: `device/${i % 3}`, outcome: 'success', details: { i } });
          }
          const bySubject = await storage.listAudit({ subject: 'device/0' });
          assert.deepEqual(bySubject.items.map((e) => e.details['i']), [0, 3, 6]);
          const byAction = await storage.listAudit({ action: 'join.refuse' });
          assert.deepEqual(byAction.items.map((e) => e.details['i']), [1, 3, 5]);
          const both = await storage.listAudit({ subject: 'device/0', action: 'join.accept' });
          assert.deepEqual(both.items.map((e) => e.details['i']), [0, 6]);

          const first = await storage.listAudit({ action: 'join.accept', limit: 3 });
          assert.deepEqual(first.items.map((e) => e.details['i']), [0, 2, 4]);
          assert.ok(first.next);
          const second = await storage.listAudit({ action: 'join.accept', limit: 3, after: first.next });
          assert.deepEqual(second.items.map((e) => e.details['i']), [6]);
          assert.equal(second.next, undefined);
        });
      });

      it('list / malformed cursor or a device cursor / RangeError', async () => {
        await assert.rejects(storage.listAudit({ after: '%%%' }), RangeError);
        const device = makeDevice({ devEui: eui64FromBeHex('0000000000000001') });
        await storage.insertDevice(device).catch(() => undefined);
        await storage.insertDevice(makeDevice({ devEui: eui64FromBeHex('0000000000000002') })).catch(() => undefined);
        const { next } = await storage.listDevices({ limit: 1 });
        assert.ok(next);
        await assert.rejects(storage.listAudit({ after: next }), RangeError);
      });
    });

    describe('migrations', () => {
      it('migrate twice / no-op, data kept', async () => {
        const device = makeDevice();
        await storage.insertDevice(device);
        await storage.migrate();
        await storage.migrate();
        assert.deepEqual(await storage.getDevice(device.devEui), device);
        const rows = await rawExecute(opened, 'select name from kysely_migration order by name');
        assert.deepEqual(rows, [{ name: '0001-initial' }, { name: '0002-personalization' }, { name: '0003-commissioning' }]);
      });

      it('database migrated by a newer build / SCHEMA_TOO_NEW, nothing applied', async () => {
        await withFresh(backend, async (fresh) => {
          const timestamp = new Date().toISOString();
          await rawExecute(fresh, `insert into kysely_migration (name, timestamp) values ('9999-from-the-future', '${timestamp}')`);
          await assert.rejects(fresh.storage.migrate(), failsWith('SCHEMA_TOO_NEW'));
          // A freshly opened storage refuses too.
          const config = fresh.path !== undefined ? { kind: 'sqlite' as const, path: fresh.path } : { kind: 'postgres' as const, url: fresh.url as string };
          const again = await openStorage(config);
          try {
            await assert.rejects(again.migrate(), failsWith('SCHEMA_TOO_NEW'));
          } finally {
            await again.close();
          }
        });
      });
    });
  });
}
