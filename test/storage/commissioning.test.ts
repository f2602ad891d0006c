import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely';
import pg from 'pg';
import type { Eui64 } from '../../src/protocol/index.js';
import {
  StorageError,
  openPostgresStorage,
  openSqliteStorage,
  type ApiKeyRecord,
  type AuditEvent,
  type BatchImport,
  type InventoryDevice,
  type OrganisationRecord,
  type OwnedBinding,
  type OwnershipTransferRecord,
  type Storage,
  type StorageErrorCode,
} from '../../src/storage/index.js';
import { applyMigrations } from '../../src/storage/migrate.js';
import { postgresMigrations } from '../../src/storage/migrations/postgres/index.js';
import { sqliteMigrations } from '../../src/storage/migrations/sqlite/index.js';
import { JOIN_EUI, NET_ID, acceptDevNonce, at, makeDevice, makeSession, randomEui } from '../helpers/storage-fixtures.js';
import { createTestDatabase } from '../helpers/postgres.js';
import { type OpenedStorage, storageBackends } from '../helpers/storages.js';

/*
 * The commissioning part of the storage contract (CommissioningStore in src/storage/storage.ts) on every database:
 * organisations, API keys, ownership of bound and unbound devices, claims, bindings, ownership transfers. Every
 * refusal is checked to change nothing by comparing the whole observable state before and after; the join state
 * (JoinNonce counter, DevNonces, RJcount1) is checked to survive every move between the inventory and `devices`.
 */

const failsWith = (code: StorageErrorCode) => (error: unknown) => {
  assert.ok(error instanceof StorageError, `expected a StorageError, got ${String(error)}`);
  assert.equal(error.code, code);
  return true;
};

let counter = 0;

const organisation = (id: string, roles: OrganisationRecord['roles'] = ['device-owner']): OrganisationRecord => ({
  id,
  name: `Organisation ${id}`,
  roles,
  netIds: [],
  nsIds: [],
  asIds: [],
  createdAt: at(),
});

const event = (action: string, subject: string, org: string | null = null): AuditEvent => ({
  at: at(50),
  actor: 'test',
  action,
  subject,
  outcome: 'success',
  details: { n: 1 },
  ...(org === null ? {} : { organisation: org }),
});

const binding = (overrides: Partial<OwnedBinding> = {}): OwnedBinding => ({
  homeNetId: NET_ID,
  homeNsId: null,
  asId: 'as-1',
  roamingNetIds: [],
  nsKekLabel: null,
  asKekLabel: null,
  ...overrides,
});

function inventory(maker: string, batchId: string, macVersion: '1.0.3' | '1.1' = '1.1'): InventoryDevice {
  const devEui = randomEui();
  return {
    devEui,
    joinEui: JOIN_EUI,
    macVersion,
    appKeyHandle: `root/${devEui}/AppKey/01`,
    nwkKeyHandle: macVersion === '1.1' ? `root/${devEui}/NwkKey/01` : null,
    maker,
    batchId,
    profile: 'th-sensor-v2',
    serialNumber: `SN-${devEui}`,
    claimCodeHash: randomBytes(32).toString('hex').toUpperCase(),
    lastJoinNonce: 0,
    lastDevNonce: null,
    createdAt: at(1),
  };
}

/** One test's world: a maker belonging to organisation `mk`, owners `a` and `b`, and `n` devices of the maker's stock. */
interface World {
  readonly mk: string;
  readonly a: string;
  readonly b: string;
  readonly maker: string;
  readonly batchId: string;
  readonly devices: InventoryDevice[];
}

async function world(s: Storage, n = 4, macVersions: readonly ('1.0.3' | '1.1')[] = []): Promise<World> {
  const i = ++counter;
  const w = { mk: `mk-${i}`, a: `own-a-${i}`, b: `own-b-${i}`, maker: `maker-${i}`, batchId: randomUUID() };
  await s.insertOrganisation(organisation(w.mk, ['device-maker']));
  await s.insertOrganisation(organisation(w.a));
  await s.insertOrganisation(organisation(w.b));
  await s.insertMaker({ name: w.maker, kind: 'device-maker', keyId: `kid-${w.maker}`, publicJwk: { kty: 'OKP' }, createdAt: at() });
  assert.equal(await s.setMakerOrganisation(w.maker, w.mk), true);
  const devices = Array.from({ length: n }, (_, k) => inventory(w.maker, w.batchId, macVersions[k] ?? '1.1'));
  const batch: BatchImport = {
    batch: { batchId: w.batchId, maker: w.maker, kind: 'device-keys', payloadSha256: 'B'.repeat(64), deviceCount: n, createdAt: at(), importedAt: at(1) },
    inventory: devices,
    audit: [],
  };
  await s.importBatch(batch);
  return { ...w, devices };
}

const claim = (owner: string, expectOwner: string | null, overrides: Partial<{ locked: boolean; claimCodeHash: string | null; expiresAt: Date | null }> = {}) => ({
  owner,
  expectOwner,
  claimCodeHash: overrides.claimCodeHash === undefined ? 'C'.repeat(64) : overrides.claimCodeHash,
  locked: overrides.locked ?? true,
  expiresAt: overrides.expiresAt ?? null,
  at: at(30),
});

/** A join on the device's own JoinEUI (counter DevNonce), optionally recording an RJcount1. */
function joinWith(s: Storage, devEui: Eui64, devNonce: number, rjCount1?: number) {
  return s.reserveJoin(
    devEui,
    JOIN_EUI,
    (current) => {
      const decision = acceptDevNonce(devEui, JOIN_EUI, devNonce)(current);
      if ('commit' in decision && rjCount1 !== undefined) return { ...decision, commit: { ...decision.commit, lastRjCount1: rjCount1 } };
      return decision;
    },
    { sessionLimit: 5 },
  );
}

/** Everything the commissioning calls may change, for the devices named and the organisations of `w`. */
async function state(s: Storage, w: World, extra: readonly Eui64[] = []) {
  const euis = [...w.devices.map((d) => d.devEui), ...extra];
  const devices = [];
  for (const devEui of euis) {
    const found = await s.findDevice(devEui);
    devices.push({
      found,
      joinState: found?.bound === true ? await s.getJoinState(devEui, found.device.joinEui) : undefined,
      sessions: await s.listSessions(devEui),
    });
  }
  return {
    devices,
    audit: (await s.listAudit({ limit: 1000 })).items.length,
    lastAudit: (await s.listAudit({ limit: 1000 })).items.at(-1),
    transfers: [...(await s.listOwnershipTransfers(w.a, { limit: 1000 })).items, ...(await s.listOwnershipTransfers(w.b, { limit: 1000 })).items],
    organisations: (await s.listOrganisations({ limit: 1000 })).items,
  };
}

async function refusedUnchanged(s: Storage, w: World, call: () => Promise<unknown>, code: StorageErrorCode, extra: readonly Eui64[] = []): Promise<void> {
  const before = await state(s, w, extra);
  await assert.rejects(call(), failsWith(code));
  assert.deepEqual(await state(s, w, extra), before, 'a refused call changes nothing');
}

for (const backend of storageBackends) {
  describe(`${backend.name} / commissioning`, () => {
    let opened: OpenedStorage;
    let s: Storage;
    before(async () => {
      opened = await backend.open();
      s = opened.storage;
    });
    after(async () => {
      await opened.cleanup();
    });

    describe('organisations', () => {
      it('inserted, read, listed in id order by pages, updated; a taken id is ORGANISATION_EXISTS and changes nothing', async () => {
        const ids = ['org-c', 'org-a', 'org-b'];
        for (const id of ids) await s.insertOrganisation(organisation(id));
        const full: OrganisationRecord = { ...organisation('org-full', ['network-operator', 'as-operator']), netIds: [NET_ID], nsIds: [JOIN_EUI], asIds: ['as-9'] };
        await s.insertOrganisation(full);
        assert.deepEqual(await s.getOrganisation('org-full'), full);
        assert.equal(await s.getOrganisation('nope'), undefined);
        await assert.rejects(s.insertOrganisation({ ...organisation('org-a'), name: 'Other' }), failsWith('ORGANISATION_EXISTS'));
        assert.equal((await s.getOrganisation('org-a'))?.name, 'Organisation org-a');

        const all = (await s.listOrganisations({ limit: 1000 })).items.map((o) => o.id);
        assert.deepEqual(all, [...all].sort());
        const first = await s.listOrganisations({ limit: 2 });
        assert.equal(first.items.length, 2);
        assert.ok(first.next);
        const rest = await s.listOrganisations({ limit: 1000, after: first.next });
        assert.deepEqual([...first.items, ...rest.items].map((o) => o.id), all);
        await assert.rejects(s.listOrganisations({ after: 'bm90LWEtY3Vyc29y' }), RangeError);

        const changed = { ...full, name: 'Renamed', roles: ['device-owner' as const], netIds: [], asIds: ['as-10'], createdAt: at(999) };
        assert.equal(await s.updateOrganisation(changed), true);
        assert.deepEqual(await s.getOrganisation('org-full'), { ...changed, createdAt: full.createdAt }, 'the creation time stays');
        assert.equal(await s.updateOrganisation(organisation('org-unknown')), false);
        assert.equal(await s.getOrganisation('org-unknown'), undefined);
      });
    });

    describe('API keys', () => {
      const key = (id: string, org: string | null, overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord => ({
        id,
        organisation: org,
        name: `key ${id}`,
        secretSha256: randomBytes(32).toString('hex'),
        scopes: ['devices:read', 'devices:claim'],
        createdAt: at(Number(id.length)),
        expiresAt: null,
        revokedAt: null,
        ...overrides,
      });

      it('inserted, read, listed per organisation and for the operator, revoked once', async () => {
        await s.insertOrganisation(organisation('keys-org'));
        const k1 = key('aaaaaaaaaaaaaaaa', 'keys-org', { expiresAt: at(1000) });
        const k2 = key('bbbbbbbbbbbbbbbb', 'keys-org', { createdAt: at(5) });
        const op = key('cccccccccccccccc', null, { scopes: ['admin'] });
        for (const k of [k1, k2, op]) await s.insertApiKey(k);
        assert.deepEqual(await s.getApiKey(k1.id), k1);
        assert.equal(await s.getApiKey('zzzzzzzzzzzzzzzz'), undefined);
        assert.deepEqual(await s.listApiKeys('keys-org'), [k2, k1].sort((x, y) => x.createdAt.getTime() - y.createdAt.getTime() || (x.id < y.id ? -1 : 1)));
        assert.deepEqual(await s.listApiKeys(null), [op]);
        assert.deepEqual(await s.listApiKeys('nobody'), []);

        assert.equal(await s.revokeApiKey(k1.id, at(100)), true);
        assert.equal(await s.revokeApiKey(k1.id, at(200)), true, 'revoking again is not an error');
        assert.deepEqual((await s.getApiKey(k1.id))?.revokedAt, at(100), 'the first revocation time stays');
        assert.equal(await s.revokeApiKey('zzzzzzzzzzzzzzzz', at(100)), false);
      });

      it('the same id or the same secret hash / API_KEY_EXISTS, nothing written', async () => {
        await s.insertOrganisation(organisation('keys-dup'));
        const k = key('dddddddddddddddd', 'keys-dup');
        await s.insertApiKey(k);
        await assert.rejects(s.insertApiKey(key(k.id, 'keys-dup')), failsWith('API_KEY_EXISTS'));
        await assert.rejects(s.insertApiKey(key('eeeeeeeeeeeeeeee', 'keys-dup', { secretSha256: k.secretSha256 })), failsWith('API_KEY_EXISTS'));
        assert.deepEqual(await s.listApiKeys('keys-dup'), [k]);
      });
    });

    describe('makers and peers', () => {
      it('belong to an organisation, or to none', async () => {
        const w = await world(s, 0);
        assert.equal((await s.makerOrganisations()).get(w.maker), w.mk);
        assert.equal(await s.setMakerOrganisation(w.maker, null), true);
        assert.equal((await s.makerOrganisations()).has(w.maker), false);
        assert.equal(await s.setMakerOrganisation('no-such-maker', w.mk), false);
        assert.deepEqual(await s.getMaker(w.maker), { name: w.maker, kind: 'device-maker', keyId: `kid-${w.maker}`, publicJwk: { kty: 'OKP' }, createdAt: at() });

        const peerId = `as/peer-${w.a}`;
        await s.insertPeer({ kind: 'as', id: peerId, netId: null, nsId: null, asId: `peer-${w.a}`, tokenSha256: null, clientCertSha256: null, kekLabel: null, allowClearKeys: false, createdAt: at() });
        assert.equal(await s.peerOrganisation(peerId), null);
        assert.equal(await s.setPeerOrganisation(peerId, w.a), true);
        assert.equal(await s.peerOrganisation(peerId), w.a);
        assert.equal(await s.peerOrganisation('as/unknown'), undefined);
        assert.equal(await s.setPeerOrganisation('as/unknown', w.a), false);
        assert.ok((await s.listPeers()).some((p) => p.id === peerId && !('organisation' in p)), 'PeerRecord is unchanged');
      });
    });

    describe('devices: finding and listing', () => {
      it('findDevice / unbound stock, bound with its commissioning, a device added by the operator, unknown', async () => {
        const w = await world(s, 2);
        const [d1, d2] = w.devices;
        const stock = await s.findDevice(d1!.devEui);
        assert.deepEqual(stock, {
          bound: false,
          device: d1,
          commissioning: { owner: null, maker: w.maker, batchId: w.batchId, profile: 'th-sensor-v2', serialNumber: d1!.serialNumber, claimCodeHash: d1!.claimCodeHash, claimLocked: false, claimExpiresAt: null, claimedAt: null },
        });
        assert.equal(await s.claimDevice(d2!.devEui, claim(w.a, null, { expiresAt: at(9999) }), []), true);
        const [bound] = await s.bindOwnedDevices(w.a, [d2!.devEui], binding({ nsKekLabel: 'kek-ns', asKekLabel: 'kek-as' }), at(40), []);
        const found = await s.findDevice(d2!.devEui);
        assert.deepEqual(found, {
          bound: true,
          device: bound,
          commissioning: { owner: w.a, maker: w.maker, batchId: w.batchId, profile: 'th-sensor-v2', serialNumber: d2!.serialNumber, claimCodeHash: 'C'.repeat(64), claimLocked: true, claimExpiresAt: at(9999), claimedAt: at(30) },
          boundAt: at(40),
        });
        assert.equal(bound?.nsKekLabel, 'kek-ns');
        assert.deepEqual(await s.getDevice(d2!.devEui), bound);

        const added = makeDevice();
        await s.insertDevice(added);
        const operator = await s.findDevice(added.devEui);
        assert.ok(operator?.bound);
        assert.deepEqual(operator.device, added);
        assert.equal(operator.commissioning.owner, null);
        assert.equal(operator.commissioning.maker, null);
        assert.equal(operator.boundAt, null);
        assert.equal(await s.findDevice(randomEui()), undefined);
      });

      it('listOwnedDevices / owner sees its own, the maker its unclaimed stock, others nothing, the operator everything; one DevEUI order over both tables, by pages, with filters', async () => {
        const w = await world(s, 6, ['1.1', '1.1', '1.0.3', '1.1', '1.0.3', '1.1']);
        const euis = w.devices.map((d) => d.devEui);
        // a owns 0 (bound), 1 (unbound), 2 (bound); b owns 3 (unbound); 4 and 5 are the maker's stock.
        for (const i of [0, 1, 2]) assert.equal(await s.claimDevice(euis[i]!, claim(w.a, null), []), true);
        assert.equal(await s.claimDevice(euis[3]!, claim(w.b, null), []), true);
        await s.bindOwnedDevices(w.a, [euis[0]!, euis[2]!], binding(), at(40), []);
        const sorted = (ids: Eui64[]) => [...ids].sort();
        const list = async (org: string | null, filter = {}) => {
          const items: string[] = [];
          let next: string | undefined;
          do {
            const page = await s.listOwnedDevices(org, { ...filter, limit: 2, ...(next === undefined ? {} : { after: next }) });
            assert.ok(page.items.length <= 2);
            items.push(...page.items.map((f) => f.device.devEui));
            next = page.next;
          } while (next !== undefined);
          return items;
        };
        assert.deepEqual(await list(w.a), sorted([euis[0]!, euis[1]!, euis[2]!]));
        assert.deepEqual(await list(w.b), [euis[3]]);
        assert.deepEqual(await list(w.mk), sorted([euis[4]!, euis[5]!]), "the maker's organisation sees its unclaimed stock only");
        assert.deepEqual(await list('nobody'), []);
        const all = await list(null);
        for (const e of euis) assert.ok(all.includes(e), 'the operator sees everything');
        assert.deepEqual(all, [...all].sort());

        assert.deepEqual(await list(w.a, { bound: true }), sorted([euis[0]!, euis[2]!]));
        assert.deepEqual(await list(w.a, { bound: false }), [euis[1]]);
        assert.deepEqual(await list(w.a, { macVersion: '1.0.3' }), [euis[2]]);
        assert.deepEqual(await list(w.a, { joinEui: randomEui() }), []);
        assert.deepEqual(await list(w.a, { joinEui: JOIN_EUI }), sorted([euis[0]!, euis[1]!, euis[2]!]));
        assert.deepEqual(await list(null, { batchId: w.batchId }), sorted(euis));
        assert.deepEqual(await list(null, { batchId: 'other' }), []);
        const first = await s.listOwnedDevices(w.a, { limit: 1000 });
        assert.deepEqual(first.items.map((f) => f.bound), sorted([euis[0]!, euis[1]!, euis[2]!]).map((e) => e !== euis[1]));
        assert.equal(first.next, undefined);
        await assert.rejects(s.listOwnedDevices(null, { after: 'bm90LWEtY3Vyc29y' }), RangeError);
      });
    });

    describe('claims', () => {
      it('unclaimed stock / claimed with the expected owner null; the wrong expected owner changes nothing', async () => {
        const w = await world(s, 1);
        const devEui = w.devices[0]!.devEui;
        const before = await state(s, w);
        assert.equal(await s.claimDevice(devEui, claim(w.a, w.b), [event('device.claim', `device/${devEui}`, w.a)]), false);
        assert.equal(await s.claimDevice(randomEui(), claim(w.a, null), [event('device.claim', 'device/x', w.a)]), false, 'unknown device');
        assert.deepEqual(await state(s, w), before, 'a lost compare-and-set changes nothing, not even the audit trail');

        assert.equal(await s.claimDevice(devEui, claim(w.a, null, { claimCodeHash: 'D'.repeat(64), expiresAt: at(500) }), [event('device.claim', `device/${devEui}`, w.a)]), true);
        const found = await s.findDevice(devEui);
        assert.equal(found?.bound, false);
        assert.deepEqual(found?.commissioning, { ...found!.commissioning, owner: w.a, claimCodeHash: 'D'.repeat(64), claimLocked: true, claimExpiresAt: at(500), claimedAt: at(30) });
        const audit = (await s.listAudit({ organisation: w.a })).items;
        assert.equal(audit.length, 1);
        assert.equal(audit[0]?.organisation, w.a);

        // Claiming it away from a now requires expecting a.
        assert.equal(await s.claimDevice(devEui, claim(w.b, null), []), false);
        assert.equal(await s.claimDevice(devEui, claim(w.b, w.a, { locked: false }), []), true);
        assert.equal((await s.findDevice(devEui))?.commissioning.owner, w.b);
        assert.equal((await s.findDevice(devEui))?.commissioning.claimLocked, false);
      });

      it('a device bound to another owner / unbound by the claim: sessions deleted, join state kept', async () => {
        const w = await world(s, 1);
        const devEui = w.devices[0]!.devEui;
        await s.claimDevice(devEui, claim(w.a, null, { locked: false }), []);
        await s.bindOwnedDevices(w.a, [devEui], binding(), at(40), []);
        await joinWith(s, devEui, 7, 3);
        assert.equal((await s.listSessions(devEui)).length, 1);
        assert.equal(await s.claimDevice(devEui, claim(w.b, w.a), []), true);
        const found = await s.findDevice(devEui);
        assert.ok(found !== undefined && !found.bound);
        assert.equal(found.commissioning.owner, w.b);
        assert.equal(found.device.lastJoinNonce, 1);
        assert.equal(found.device.lastDevNonce, 7);
        assert.deepEqual(await s.listSessions(devEui), []);
        assert.equal(await s.getSession(devEui, makeSession(devEui, JOIN_EUI, 1, 7).sessionKeyId), undefined);
        await s.bindOwnedDevices(w.b, [devEui], binding(), at(60), []);
        assert.deepEqual(await s.getJoinState(devEui, JOIN_EUI), { lastJoinNonce: 1, lastDevNonce: 7, usedDevNonces: [7], lastRjCount1: 3 });
      });

      it('the owner re-claiming its own bound device / stays bound, claim updated', async () => {
        const w = await world(s, 1);
        const devEui = w.devices[0]!.devEui;
        await s.claimDevice(devEui, claim(w.a, null), []);
        await s.bindOwnedDevices(w.a, [devEui], binding(), at(40), []);
        await joinWith(s, devEui, 1);
        assert.equal(await s.claimDevice(devEui, claim(w.a, w.a, { claimCodeHash: 'E'.repeat(64) }), []), true);
        const found = await s.findDevice(devEui);
        assert.equal(found?.bound, true);
        assert.equal(found?.commissioning.claimCodeHash, 'E'.repeat(64));
        assert.equal((await s.listSessions(devEui)).length, 1);
      });

      it('two concurrent claims expecting the same owner / exactly one wins, for each of 8 devices', async () => {
        const w = await world(s, 8);
        const euis = w.devices.map((d) => d.devEui);
        const results = await Promise.all(
          euis.flatMap((devEui) => [
            s.claimDevice(devEui, claim(w.a, null), [event('device.claim', `device/${devEui}`, w.a)]),
            s.claimDevice(devEui, claim(w.b, null), [event('device.claim', `device/${devEui}`, w.b)]),
          ]),
        );
        for (const [i, devEui] of euis.entries()) {
          const pair = [results[2 * i]!, results[2 * i + 1]!];
          assert.deepEqual([...pair].sort(), [false, true], `one claim of ${devEui} wins`);
          assert.equal((await s.findDevice(devEui))?.commissioning.owner, pair[0] ? w.a : w.b);
          assert.equal((await s.listAudit({ subject: `device/${devEui}` })).items.length, 1, "only the winner's audit event");
        }
      });

      it('updateClaim / the owner sets code, lock and expiry; another organisation is NOT_OWNED and changes nothing', async () => {
        const w = await world(s, 2);
        const [d1, d2] = w.devices.map((d) => d.devEui);
        await s.claimDevice(d1!, claim(w.a, null), []);
        await s.claimDevice(d2!, claim(w.a, null), []);
        await s.bindOwnedDevices(w.a, [d2!], binding(), at(40), []);
        for (const devEui of [d1!, d2!]) {
          await s.updateClaim(w.a, devEui, { claimCodeHash: null, locked: false, expiresAt: at(77) }, [event('device.claim-update', `device/${devEui}`, w.a)]);
          const c = (await s.findDevice(devEui))!.commissioning;
          assert.deepEqual([c.claimCodeHash, c.claimLocked, c.claimExpiresAt, c.owner], [null, false, at(77), w.a]);
        }
        await refusedUnchanged(s, w, () => s.updateClaim(w.b, d1!, { claimCodeHash: 'F'.repeat(64), locked: true, expiresAt: null }, [event('x', 'y', w.b)]), 'NOT_OWNED');
        await refusedUnchanged(s, w, () => s.updateClaim(w.a, randomEui(), { claimCodeHash: null, locked: true, expiresAt: null }, [event('x', 'y', w.a)]), 'NOT_OWNED');
        await s.updateClaim(null, d1!, { claimCodeHash: 'F'.repeat(64), locked: true, expiresAt: null }, []);
        assert.equal((await s.findDevice(d1!))?.commissioning.claimCodeHash, 'F'.repeat(64), 'the operator may');
      });
    });

    describe('binding', () => {
      it('bind → unbind → rebind / JoinNonce, last DevNonce, used DevNonces and RJcount1 kept; a used DevNonce stays refused; sessions deleted on unbind', async () => {
        const w = await world(s, 1, ['1.0.3']);
        const devEui = w.devices[0]!.devEui;
        await s.claimDevice(devEui, claim(w.a, null), []);
        await s.bindOwnedDevices(w.a, [devEui], binding(), at(40), [event('device.bind', `device/${devEui}`, w.a)]);
        for (const [nonce, rj] of [[3, undefined], [9, 2], [12, undefined]] as const) assert.ok('committed' in (await joinWith(s, devEui, nonce, rj)));
        const joined = await s.getJoinState(devEui, JOIN_EUI);
        assert.deepEqual(joined, { lastJoinNonce: 3, lastDevNonce: 12, usedDevNonces: [3, 9, 12], lastRjCount1: 2 });
        assert.equal((await s.listSessions(devEui)).length, 3);

        await s.unbindOwnedDevices(w.a, [devEui], [event('device.unbind', `device/${devEui}`, w.a)]);
        const unbound = await s.findDevice(devEui);
        assert.ok(unbound !== undefined && !unbound.bound);
        assert.equal(unbound.commissioning.owner, w.a, 'the owner stays');
        assert.equal(unbound.commissioning.claimLocked, true);
        assert.deepEqual([unbound.device.lastJoinNonce, unbound.device.lastDevNonce], [3, 12]);
        assert.equal(await s.getDevice(devEui), undefined, 'not activatable');
        assert.deepEqual(await s.listSessions(devEui), []);
        assert.equal(await s.servesJoinEui(JOIN_EUI), true); // other tests' devices; unchanged behaviour

        const [rebound] = await s.bindOwnedDevices(w.a, [devEui], binding({ asId: 'as-2' }), at(70), []);
        assert.equal(rebound?.asId, 'as-2');
        assert.deepEqual(await s.getJoinState(devEui, JOIN_EUI), joined);
        for (const replay of [3, 9, 12, 11]) {
          assert.deepEqual(await joinWith(s, devEui, replay), { refused: 'DevNonceReplayed' }, `DevNonce ${replay} stays refused`);
        }
        const next = await joinWith(s, devEui, 13);
        assert.ok('committed' in next);
        assert.equal(next.committed.lastJoinNonce, 4, 'the JoinNonce continues, never reset');
        assert.deepEqual((await s.listAudit({ organisation: w.a })).items.map((e) => e.action), ['device.bind', 'device.unbind']);
      });

      it('bindOwnedDevices / a bound device gets the new binding; another owner, unclaimed stock or an unknown DevEUI is NOT_OWNED and binds none', async () => {
        const w = await world(s, 4);
        const [d1, d2, stock, other] = w.devices.map((d) => d.devEui);
        await s.claimDevice(d1!, claim(w.a, null), []);
        await s.claimDevice(d2!, claim(w.a, null), []);
        await s.claimDevice(other!, claim(w.b, null), []);
        await s.bindOwnedDevices(w.a, [d1!], binding(), at(40), []);
        for (const intruder of [stock!, other!, randomEui()]) {
          await refusedUnchanged(s, w, () => s.bindOwnedDevices(w.a, [d1!, d2!, intruder], binding({ asId: 'as-9' }), at(41), [event('device.bind', 'device/x', w.a)]), 'NOT_OWNED');
        }
        const bound = await s.bindOwnedDevices(w.a, [d2!, d1!], binding({ roamingNetIds: null, asKekLabel: 'kek-as-2' }), at(42), []);
        assert.deepEqual(bound.map((d) => d.devEui), [d2, d1]);
        for (const d of bound) {
          assert.deepEqual(await s.getDevice(d.devEui), d);
          assert.equal(d.roamingNetIds, null);
          assert.equal(d.asKekLabel, 'kek-as-2');
          assert.equal((await s.findDevice(d.devEui))?.bound && (await s.findDevice(d.devEui) as { boundAt: Date }).boundAt.getTime(), at(42).getTime());
        }
        const [operatorBound] = await s.bindOwnedDevices(null, [stock!], binding(), at(43), []);
        assert.equal(operatorBound?.devEui, stock);
        assert.equal((await s.findDevice(stock!))?.commissioning.owner, null, 'the operator binds unclaimed stock without owning it');
      });

      it('bindInventoryDevices (the operator path) / carries maker, batch, profile, serial, claim, used DevNonces and RJcount1', async () => {
        const w = await world(s, 1);
        const devEui = w.devices[0]!.devEui;
        await s.claimDevice(devEui, claim(w.a, null), []);
        await s.bindOwnedDevices(w.a, [devEui], binding(), at(40), []);
        await joinWith(s, devEui, 5, 1);
        await s.unbindOwnedDevices(w.a, [devEui], []);
        const [bound] = await s.bindInventoryDevices([devEui], { homeNetId: NET_ID, homeNsId: null, asId: null, roamingNetIds: null }, []);
        assert.deepEqual(await s.getDevice(devEui), bound);
        const found = await s.findDevice(devEui);
        assert.ok(found?.bound);
        assert.deepEqual(
          [found.commissioning.owner, found.commissioning.maker, found.commissioning.batchId, found.commissioning.profile, found.commissioning.serialNumber, found.commissioning.claimCodeHash, found.commissioning.claimLocked],
          [w.a, w.maker, w.batchId, 'th-sensor-v2', w.devices[0]!.serialNumber, 'C'.repeat(64), true],
        );
        assert.deepEqual(await s.getJoinState(devEui, JOIN_EUI), { lastJoinNonce: 1, lastDevNonce: 5, usedDevNonces: [5], lastRjCount1: 1 });
      });
    });

    describe('unbinding and unclaiming', () => {
      it('unbindOwnedDevices / refused for another owner or unknown DevEUI, all or none; a device the operator added cannot be unbound', async () => {
        const w = await world(s, 2);
        const [d1, d2] = w.devices.map((d) => d.devEui);
        await s.claimDevice(d1!, claim(w.a, null), []);
        await s.claimDevice(d2!, claim(w.b, null), []);
        await s.bindOwnedDevices(null, [d1!, d2!], binding(), at(40), []);
        await joinWith(s, d1!, 1);
        await refusedUnchanged(s, w, () => s.unbindOwnedDevices(w.a, [d1!, d2!], [event('device.unbind', 'device/x', w.a)]), 'NOT_OWNED');
        await refusedUnchanged(s, w, () => s.unbindOwnedDevices(w.a, [d1!, randomEui()], []), 'NOT_OWNED');
        const added = makeDevice();
        await s.insertDevice(added);
        await refusedUnchanged(s, w, () => s.unbindOwnedDevices(null, [d1!, added.devEui], []), 'NOT_OWNED', [added.devEui]);
        await s.unbindOwnedDevices(null, [d1!, d2!], []);
        assert.equal((await s.findDevice(d1!))?.bound, false);
        assert.equal((await s.findDevice(d2!))?.commissioning.owner, w.b, 'the operator unbinds without taking ownership');
        await s.unbindOwnedDevices(w.a, [d1!], []); // already unbound: nothing to do
        assert.equal((await s.findDevice(d1!))?.bound, false);
      });

      it("unclaimOwnedDevices / back to the maker's stock: unbound, owner null, unlocked, sessions deleted, join state kept", async () => {
        const w = await world(s, 3);
        const [d1, d2, d3] = w.devices.map((d) => d.devEui);
        for (const d of [d1!, d2!]) await s.claimDevice(d, claim(w.a, null), []);
        await s.claimDevice(d3!, claim(w.b, null), []);
        await s.bindOwnedDevices(w.a, [d1!], binding(), at(40), []);
        await joinWith(s, d1!, 4);
        await refusedUnchanged(s, w, () => s.unclaimOwnedDevices(w.a, [d1!, d3!], [event('device.unclaim', 'device/x', w.a)]), 'NOT_OWNED');
        await s.unclaimOwnedDevices(w.a, [d1!, d2!], [event('device.unclaim', `device/${d1}`, w.a)]);
        for (const d of [d1!, d2!]) {
          const found = await s.findDevice(d);
          assert.ok(found !== undefined && !found.bound);
          assert.deepEqual([found.commissioning.owner, found.commissioning.claimLocked, found.commissioning.claimedAt], [null, false, null]);
        }
        assert.deepEqual(await s.listSessions(d1!), []);
        assert.deepEqual(((await s.findDevice(d1!))?.device as InventoryDevice).lastJoinNonce, 1);
        assert.deepEqual((await s.listOwnedDevices(w.mk)).items.map((f) => f.device.devEui).sort(), [d1!, d2!].sort(), "visible to the maker's organisation again");
        await refusedUnchanged(s, w, () => s.unclaimOwnedDevices(w.a, [d1!], []), 'NOT_OWNED');
      });
    });

    describe('DevNonce reset', () => {
      it('forgets the DevNonces of a bound or unbound device; the JoinNonce stays; unknown is false', async () => {
        const w = await world(s, 1);
        const devEui = w.devices[0]!.devEui;
        await s.claimDevice(devEui, claim(w.a, null), []);
        await s.bindOwnedDevices(w.a, [devEui], binding(), at(40), []);
        await joinWith(s, devEui, 10, 4);
        await joinWith(s, devEui, 11);
        assert.equal(await s.resetDevNonces(devEui, [event('device.devnonce-reset', `device/${devEui}`, w.a)]), true);
        assert.deepEqual(await s.getJoinState(devEui, JOIN_EUI), { lastJoinNonce: 2, lastDevNonce: null, usedDevNonces: [], lastRjCount1: 4 });
        assert.ok('committed' in (await joinWith(s, devEui, 0)), 'the device may start its DevNonces again');
        await s.unbindOwnedDevices(w.a, [devEui], []);
        assert.equal(await s.resetDevNonces(devEui, []), true);
        await s.bindOwnedDevices(w.a, [devEui], binding(), at(41), []);
        assert.deepEqual(await s.getJoinState(devEui, JOIN_EUI), { lastJoinNonce: 3, lastDevNonce: null, usedDevNonces: [], lastRjCount1: 4 });
        const before = (await s.listAudit({ limit: 1000 })).items.length;
        assert.equal(await s.resetDevNonces(randomEui(), [event('device.devnonce-reset', 'device/x')]), false);
        assert.equal((await s.listAudit({ limit: 1000 })).items.length, before);
        assert.equal((await s.listAudit({ organisation: w.a, action: 'device.devnonce-reset' })).items.length, 1);
      });
    });

    describe('ownership transfers', () => {
      const offer = (w: World, devEuis: Eui64[], overrides: Partial<OwnershipTransferRecord> = {}): OwnershipTransferRecord => ({
        id: randomUUID(),
        fromOrg: w.a,
        toOrg: w.b,
        tokenSha256: null,
        devEuis,
        state: 'offered',
        createdAt: at(100),
        expiresAt: null,
        decidedAt: null,
        acceptedBy: null,
        ...overrides,
      });

      it('offered, found by id and token, listed newest first by pages for both organisations', async () => {
        const w = await world(s, 2);
        const euis = w.devices.map((d) => d.devEui);
        for (const d of euis) await s.claimDevice(d, claim(w.a, null), []);
        const token = randomBytes(32).toString('hex');
        const direct = offer(w, [euis[0]!]);
        const byToken = offer(w, euis, { toOrg: null, tokenSha256: token, createdAt: at(200), expiresAt: at(9000) });
        const same = offer(w, [euis[1]!], { createdAt: at(200) });
        for (const t of [direct, byToken, same]) await s.insertOwnershipTransfer(t, [event('transfer.offer', `transfer/${t.id}`, w.a)]);
        assert.deepEqual(await s.getOwnershipTransfer(direct.id), direct);
        assert.deepEqual(await s.findOwnershipTransferByTokenSha256(token), byToken);
        assert.equal(await s.findOwnershipTransferByTokenSha256('0'.repeat(64)), undefined);
        assert.equal(await s.getOwnershipTransfer(randomUUID()), undefined);
        const newestFirst = [byToken, same].sort((x, y) => (x.id < y.id ? 1 : -1)).concat(direct).map((t) => t.id);
        const first = await s.listOwnershipTransfers(w.a, { limit: 2 });
        assert.ok(first.next);
        const second = await s.listOwnershipTransfers(w.a, { limit: 2, after: first.next });
        assert.deepEqual([...first.items, ...second.items].map((t) => t.id), newestFirst);
        assert.equal(second.next, undefined);
        assert.deepEqual((await s.listOwnershipTransfers(w.b)).items.map((t) => t.id), [same.id, direct.id].sort((x, y) => (x === same.id ? -1 : y === same.id ? 1 : 0)), 'the token offer names no recipient');
        assert.deepEqual((await s.listOwnershipTransfers(w.mk)).items, []);
        await assert.rejects(s.listOwnershipTransfers(w.a, { after: 'bm90LWEtY3Vyc29y' }), RangeError);
      });

      it('offering a device that is not the sender\'s / NOT_OWNED, nothing written', async () => {
        const w = await world(s, 2);
        const [mine, stock] = w.devices.map((d) => d.devEui);
        await s.claimDevice(mine!, claim(w.a, null), []);
        const t = offer(w, [mine!, stock!]);
        await refusedUnchanged(s, w, () => s.insertOwnershipTransfer(t, [event('transfer.offer', 'transfer/x', w.a)]), 'NOT_OWNED');
        assert.equal(await s.getOwnershipTransfer(t.id), undefined);
      });

      it('accepted / every device moves to the recipient unbound and unlocked, sessions deleted, join state kept; audit for both organisations', async () => {
        const w = await world(s, 2);
        const [boundEui, unboundEui] = w.devices.map((d) => d.devEui);
        for (const d of [boundEui!, unboundEui!]) await s.claimDevice(d, claim(w.a, null), []);
        await s.bindOwnedDevices(w.a, [boundEui!], binding(), at(40), []);
        await joinWith(s, boundEui!, 20, 6);
        await joinWith(s, boundEui!, 21);
        const t = offer(w, [boundEui!, unboundEui!]);
        await s.insertOwnershipTransfer(t, []);
        await s.acceptOwnershipTransfer(t.id, w.b, at(300), [event('transfer.accept', `transfer/${t.id}`, w.a), event('transfer.accept', `transfer/${t.id}`, w.b)]);
        assert.deepEqual(await s.getOwnershipTransfer(t.id), { ...t, state: 'accepted', decidedAt: at(300), acceptedBy: w.b });
        for (const d of [boundEui!, unboundEui!]) {
          const found = await s.findDevice(d);
          assert.ok(found !== undefined && !found.bound);
          assert.deepEqual([found.commissioning.owner, found.commissioning.claimLocked, found.commissioning.claimedAt], [w.b, false, at(300)]);
          assert.deepEqual(await s.listSessions(d), []);
        }
        await s.bindOwnedDevices(w.b, [boundEui!], binding(), at(301), []);
        assert.deepEqual(await s.getJoinState(boundEui!, JOIN_EUI), { lastJoinNonce: 2, lastDevNonce: 21, usedDevNonces: [20, 21], lastRjCount1: 6 });
        assert.deepEqual(await joinWith(s, boundEui!, 21), { refused: 'DevNonceReplayed' });
        assert.deepEqual((await s.listAudit({ subject: `transfer/${t.id}` })).items.map((e) => e.organisation), [w.a, w.b]);
        assert.equal((await s.listAudit({ organisation: w.b, subject: `transfer/${t.id}` })).items.length, 1);
        // Accepting again, or cancelling it now, is refused and changes nothing.
        await refusedUnchanged(s, w, () => s.acceptOwnershipTransfer(t.id, w.b, at(302), [event('x', 'y', w.b)]), 'TRANSFER_NOT_OFFERED');
        assert.equal(await s.cancelOwnershipTransfer(t.id, at(303), [event('x', 'y', w.a)]), false);
      });

      it('refusals / wrong recipient, expired, cancelled, unknown, by its sender: TRANSFER_NOT_OFFERED; a device no longer the sender\'s: NOT_OWNED; each changes nothing', async () => {
        const w = await world(s, 2);
        const [d1, d2] = w.devices.map((d) => d.devEui);
        for (const d of [d1!, d2!]) await s.claimDevice(d, claim(w.a, null, { locked: false }), []);
        await s.bindOwnedDevices(w.a, [d1!], binding(), at(40), []);
        await joinWith(s, d1!, 1);
        const direct = offer(w, [d1!, d2!]);
        const expiring = offer(w, [d1!], { toOrg: null, tokenSha256: randomBytes(32).toString('hex'), expiresAt: at(250) });
        const cancelled = offer(w, [d1!]);
        for (const t of [direct, expiring, cancelled]) await s.insertOwnershipTransfer(t, []);
        assert.equal(await s.cancelOwnershipTransfer(cancelled.id, at(150), [event('transfer.cancel', `transfer/${cancelled.id}`, w.a)]), true);
        assert.deepEqual(await s.getOwnershipTransfer(cancelled.id), { ...cancelled, state: 'cancelled', decidedAt: at(150) });
        assert.equal(await s.cancelOwnershipTransfer(cancelled.id, at(151), []), false);
        assert.equal(await s.cancelOwnershipTransfer(randomUUID(), at(151), []), false);

        const accept = (id: string, by: string, when = 200) => () => s.acceptOwnershipTransfer(id, by, at(when), [event('transfer.accept', `transfer/${id}`, by)]);
        await refusedUnchanged(s, w, accept(direct.id, w.mk), 'TRANSFER_NOT_OFFERED');
        await refusedUnchanged(s, w, accept(direct.id, w.a), 'TRANSFER_NOT_OFFERED');
        await refusedUnchanged(s, w, accept(expiring.id, w.b, 250), 'TRANSFER_NOT_OFFERED');
        await refusedUnchanged(s, w, accept(cancelled.id, w.b), 'TRANSFER_NOT_OFFERED');
        await refusedUnchanged(s, w, accept(randomUUID(), w.b), 'TRANSFER_NOT_OFFERED');
        // d2 claimed away by the maker's org meanwhile: the whole transfer fails, d1 (bound, with a session) untouched.
        assert.equal(await s.claimDevice(d2!, claim(w.mk, w.a), []), true);
        await refusedUnchanged(s, w, accept(direct.id, w.b), 'NOT_OWNED');
        assert.equal((await s.getOwnershipTransfer(direct.id))?.state, 'offered');
        await s.acceptOwnershipTransfer(expiring.id, w.b, at(249), []);
        assert.equal((await s.findDevice(d1!))?.commissioning.owner, w.b, 'a token offer is accepted by whoever presents it, before it expires');
      });

      it('accepted twice at once / exactly one acceptance wins, the devices move once', async () => {
        const w = await world(s, 3);
        const euis = w.devices.map((d) => d.devEui);
        for (const d of euis) await s.claimDevice(d, claim(w.a, null), []);
        await s.bindOwnedDevices(w.a, [euis[0]!], binding(), at(40), []);
        const t = offer(w, euis, { toOrg: null, tokenSha256: randomBytes(32).toString('hex') });
        await s.insertOwnershipTransfer(t, []);
        const results = await Promise.allSettled([
          s.acceptOwnershipTransfer(t.id, w.b, at(300), [event('transfer.accept', `transfer/${t.id}`, w.b)]),
          s.acceptOwnershipTransfer(t.id, w.mk, at(300), [event('transfer.accept', `transfer/${t.id}`, w.mk)]),
        ]);
        const won = results.filter((r) => r.status === 'fulfilled');
        const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        assert.equal(won.length, 1);
        assert.equal(lost.length, 1);
        failsWith('TRANSFER_NOT_OFFERED')(lost[0]!.reason);
        const winner = results[0]!.status === 'fulfilled' ? w.b : w.mk;
        assert.equal((await s.getOwnershipTransfer(t.id))?.acceptedBy, winner);
        for (const d of euis) assert.equal((await s.findDevice(d))?.commissioning.owner, winner);
        assert.equal((await s.listAudit({ subject: `transfer/${t.id}` })).items.length, 1);
      });
    });

    describe('audit', () => {
      it('appendAudit and listAudit / organisation stored and filtered; absent for the operator\'s own events', async () => {
        const org = `audit-${++counter}`;
        await s.appendAudit(event('peer.add', `peer/${org}`, org));
        await s.appendAudit(event('peer.add', `peer/${org}`));
        const all = (await s.listAudit({ subject: `peer/${org}` })).items;
        assert.equal(all.length, 2);
        assert.equal(all[0]?.organisation, org);
        assert.equal('organisation' in all[1]!, false);
        const mine = await s.listAudit({ organisation: org });
        assert.deepEqual(mine.items.map((e) => e.id), [all[0]?.id]);
      });
    });
  });
}

describe('migration 0003 from a database of the previous schema (0002)', () => {
  for (const name of ['sqlite', 'postgres'] as const) {
    it(`${name} / rows of 0002 kept, new columns at their defaults`, async () => {
      const upTo2 = (all: Readonly<Record<string, unknown>>) => Object.fromEntries(Object.entries(all).filter(([k]) => k < '0003'));
      let dir: string | undefined;
      let database: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
      let old: Kysely<unknown>;
      if (name === 'sqlite') {
        dir = await mkdtemp(join(tmpdir(), 'joinkeep-mig-'));
        old = new Kysely<unknown>({ dialect: new SqliteDialect({ database: new BetterSqlite3(join(dir, 'j.db')) }) });
        await applyMigrations(old, upTo2(sqliteMigrations) as typeof sqliteMigrations);
      } else {
        database = await createTestDatabase();
        old = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: database.url, max: 1 }) }) });
        await applyMigrations(old, upTo2(postgresMigrations) as typeof postgresMigrations);
      }
      const device = makeDevice();
      const stock = randomEui();
      const t = 1_700_000_000_123;
      await sql
        .raw(
          `insert into devices (dev_eui, join_eui, mac_version, app_key_handle, nwk_key_handle, home_net_id, home_ns_id, as_id, roaming_net_ids, last_join_nonce, created_at)
           values ('${device.devEui}', '${device.joinEui}', '1.1', '${device.appKeyHandle}', '${device.nwkKeyHandle}', '${device.homeNetId}', '${device.homeNsId}', '${device.asId}', '${JSON.stringify(device.roamingNetIds)}', 7, ${t})`,
        )
        .execute(old);
      await sql.raw(`insert into device_join_state (dev_eui, join_eui, last_dev_nonce, used_dev_nonces, last_rj_count1, updated_at) values ('${device.devEui}', '${device.joinEui}', 5, '[5]', 2, ${t})`).execute(old);
      await sql.raw(`insert into makers (name, kind, key_id, public_jwk, created_at) values ('old-maker', 'device-maker', 'kid-old', '{}', ${t})`).execute(old);
      await sql.raw(`insert into batches (batch_id, maker, kind, payload_sha256, device_count, created_at, imported_at) values ('b-old', 'old-maker', 'device-keys', '${'A'.repeat(64)}', 1, ${t}, ${t})`).execute(old);
      await sql
        .raw(
          `insert into device_inventory (dev_eui, join_eui, mac_version, app_key_handle, nwk_key_handle, maker, batch_id, profile, serial_number, claim_code_hash, last_join_nonce, last_dev_nonce, created_at)
           values ('${stock}', '${JOIN_EUI}', '1.0.3', 'h', null, 'old-maker', 'b-old', null, null, null, 3, 9, ${t})`,
        )
        .execute(old);
      await sql.raw(`insert into audit_events (at, actor, action, subject, outcome, details) values (${t}, 'cli', 'device.add', 'device/${device.devEui}', 'success', '{}')`).execute(old);
      await old.destroy();

      const storage = name === 'sqlite' ? await openSqliteStorage(join(dir!, 'j.db')) : await openPostgresStorage(database!.url, { maxConnections: 2 });
      try {
        await storage.migrate();
        assert.deepEqual(await storage.getDevice(device.devEui), { ...device, createdAt: new Date(t) });
        assert.deepEqual(await storage.getJoinState(device.devEui, device.joinEui), { lastJoinNonce: 7, lastDevNonce: 5, usedDevNonces: [5], lastRjCount1: 2 });
        const bound = await storage.findDevice(device.devEui);
        assert.ok(bound?.bound);
        assert.deepEqual(bound.commissioning, { owner: null, maker: null, batchId: null, profile: null, serialNumber: null, claimCodeHash: null, claimLocked: false, claimExpiresAt: null, claimedAt: null });
        const unbound = await storage.findDevice(stock);
        assert.ok(unbound !== undefined && !unbound.bound);
        assert.deepEqual([unbound.device.lastJoinNonce, unbound.device.lastDevNonce, unbound.commissioning.owner, unbound.commissioning.claimLocked], [3, 9, null, false]);
        assert.equal((await storage.makerOrganisations()).size, 0);
        const audit = (await storage.listAudit()).items;
        assert.equal(audit.length, 1);
        assert.equal('organisation' in audit[0]!, false);
        // The carried last DevNonce survives binding (used DevNonces and RJcount1 were not kept by 0002).
        await storage.bindInventoryDevices([stock], { homeNetId: NET_ID, homeNsId: null, asId: null, roamingNetIds: null }, []);
        assert.deepEqual(await storage.getJoinState(stock, JOIN_EUI), { lastJoinNonce: 3, lastDevNonce: 9, usedDevNonces: [], lastRjCount1: null });
      } finally {
        await storage.close();
        if (dir !== undefined) await rm(dir, { recursive: true, force: true });
        await database?.drop();
      }
    });
  }
});
