import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { type PeerRecord, type PostgresStorage, StorageError, openPostgresStorage } from '../../src/storage/index.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { NET_ID, at, makeDevice, randomEui } from '../helpers/storage-fixtures.js';

/*
 * The join path's look-ups on PostgreSQL, batched per turn of the event loop (docs/storage.md, "Look-ups on the join
 * path"): one statement per kind for the look-ups of one turn, each caller gets its own answer, and nothing is cached.
 * The contract tests (contract.test.ts) check the same look-ups one at a time on both databases.
 */

const sha = (fill: string): string => fill.repeat(64);

function peer(overrides: Partial<PeerRecord> & Pick<PeerRecord, 'id'>): PeerRecord {
  return { kind: 'ns', netId: NET_ID, nsId: null, asId: null, tokenSha256: null, clientCertSha256: null, kekLabel: null, allowClearKeys: false, createdAt: at(), ...overrides };
}

describe('postgres / batched look-ups', () => {
  let database: { url: string; drop(): Promise<void> };
  let storage: PostgresStorage;
  const batches: [string, number][] = [];
  before(async () => {
    database = await createTestDatabase();
    storage = await openPostgresStorage(database.url, { maxConnections: 4, onLookupBatch: (operation, keys) => batches.push([operation, keys]) });
    await storage.migrate();
  });
  after(async () => {
    await storage.close();
    await database.drop();
  });

  it('devices looked up in one turn / one statement, each caller its own device, an unknown one undefined', async () => {
    const devices = Array.from({ length: 5 }, () => makeDevice());
    for (const d of devices) await storage.insertDevice(d);
    const unknown = randomEui();
    batches.length = 0;
    const found = await Promise.all([...devices, devices[0]!].map((d) => storage.getDevice(d.devEui)).concat(storage.getDevice(unknown)));
    assert.deepEqual(batches, [['getDevice', 6]], 'one statement for six keys (one asked twice)');
    assert.deepEqual(found, [...devices, devices[0]!, undefined]);
  });

  it('peers looked up in one turn / by token, and the first application server by id when several share an AS-ID', async () => {
    const peers = [
      peer({ id: 'ns/a', tokenSha256: sha('a') }),
      peer({ id: 'ns/b', tokenSha256: sha('b') }),
      peer({ id: 'as/2', kind: 'as', netId: null, asId: 'as-shared', tokenSha256: sha('c'), kekLabel: 'kek-2' }),
      peer({ id: 'as/1', kind: 'as', netId: null, asId: 'as-shared', tokenSha256: sha('d'), kekLabel: 'kek-1' }),
      peer({ id: 'as/3', kind: 'as', netId: null, asId: 'as-other', tokenSha256: sha('e') }),
    ];
    for (const p of peers) await storage.insertPeer(p);
    batches.length = 0;
    const [a, b, none, shared, other, missing] = await Promise.all([
      storage.findPeerByTokenSha256(sha('a')),
      storage.findPeerByTokenSha256(sha('b')),
      storage.findPeerByTokenSha256(sha('f')),
      storage.findApplicationServer('as-shared'),
      storage.findApplicationServer('as-other'),
      storage.findApplicationServer('as-missing'),
    ]);
    assert.deepEqual(batches.sort(), [['findApplicationServer', 3], ['findPeerByTokenSha256', 3]]);
    assert.deepEqual([a, b, none], [peers[0], peers[1], undefined]);
    assert.deepEqual([shared, other, missing], [peers[3], peers[4], undefined]);
  });

  it('a device deleted / the next look-up does not find it (nothing is cached)', async () => {
    const device = makeDevice();
    await storage.insertDevice(device);
    assert.deepEqual(await storage.getDevice(device.devEui), device);
    // Deleted by another instance: a connection of its own.
    const other = new pg.Client({ connectionString: database.url });
    await other.connect();
    try {
      await other.query('delete from devices where dev_eui = $1', [device.devEui]);
    } finally {
      await other.end();
    }
    assert.equal(await storage.getDevice(device.devEui), undefined);
  });

  it('a batch that fails / every look-up in it fails with UNAVAILABLE, the next batch is answered', async () => {
    const fresh = await openPostgresStorage(database.url, { maxConnections: 1 });
    const admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    const device = makeDevice();
    await storage.insertDevice(device);
    try {
      // The statement is prepared on first use: with the table renamed, PostgreSQL refuses it.
      await admin.query('alter table devices rename to devices_away');
      const outcomes = await Promise.allSettled([fresh.getDevice(device.devEui), fresh.getDevice(randomEui())]);
      for (const o of outcomes) assert.ok(o.status === 'rejected' && o.reason instanceof StorageError && o.reason.code === 'UNAVAILABLE');
    } finally {
      await admin.query('alter table devices_away rename to devices');
      await admin.end();
    }
    try {
      assert.deepEqual(await fresh.getDevice(device.devEui), device);
    } finally {
      await fresh.close();
    }
  });
});
