import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { JWK } from 'jose';
import { scopes } from '../../src/commissioning/caller.js';
import { claimCodeHash, generateClaimCode, generateMakerKey, sealBatch } from '../../src/provisioning/sealed-batch/index.js';
import { cliJson, cliOk } from '../helpers/cli-run.js';
import { type Answer, type ApiHarness, operatorKey, startApi } from './harness.js';

/*
 * Authorisation of the REST API (issue 6: "authorisation tests for every route", "cross-tenant isolation is tested"),
 * over real HTTP against a real SQLite installation made by `joinkeep init`.
 *
 * 1. Every operation of the OpenAPI document the server serves is classified in ROUTES below (its scope, and what a
 *    caller without it is answered). The test fails when the document has an operation the table does not classify,
 *    or the table one the document lacks: a new route must be added here, with its authorisation decided.
 * 2. Two device owners A and B, a maker M with a sealed batch, network operators with peers and KEKs: B, with every
 *    scope an organisation can hold, sees none of A's (or M's) data and changes none of it; for a DevEUI B may not see
 *    the answer is the answer for a DevEUI that does not exist, byte for byte (the DevEUI itself aside).
 */

type RouteScope = (typeof scopes)[number] | 'public' | 'authenticated';

interface Route {
  /** What config.scope the route declares. */
  readonly scope: RouteScope;
  /** The path with plausible parameter values (checked to match the document's template). */
  readonly example: string;
  /** A plausible body (authorisation is decided before the body is parsed; it only has to look real). */
  readonly body?: unknown;
}

const DEV_EUI = '70B3D57ED0FF0001';
const TRANSFER = '6f1c2b0e-8f4a-4d7e-9a51-3c2d1e0f9b87';
const KEY_ID = 'abcdefghijklmnop';
const SOME_ORG = 'some-org';

/** Every operation of /api/v1, by `METHOD template` as the OpenAPI document spells it. */
const ROUTES: Record<string, Route> = {
  'GET /api/v1/openapi.json': { scope: 'public', example: '/api/v1/openapi.json' },
  'GET /api/v1/receiving-key': { scope: 'public', example: '/api/v1/receiving-key' },
  'POST /api/v1/batches': { scope: 'batches:write', example: '/api/v1/batches', body: { protected: 'x', payload: 'y', signature: 'z' } },
  'GET /api/v1/batches': { scope: 'batches:read', example: '/api/v1/batches' },
  'GET /api/v1/devices': { scope: 'devices:read', example: '/api/v1/devices' },
  'GET /api/v1/devices/{devEui}': { scope: 'devices:read', example: `/api/v1/devices/${DEV_EUI}` },
  'GET /api/v1/devices/{devEui}/activations': { scope: 'devices:read', example: `/api/v1/devices/${DEV_EUI}/activations` },
  'POST /api/v1/devices/{devEui}/dev-nonce-reset': { scope: 'devices:bind', example: `/api/v1/devices/${DEV_EUI}/dev-nonce-reset` },
  'POST /api/v1/claims': { scope: 'devices:claim', example: '/api/v1/claims', body: { devEui: DEV_EUI, claimCode: 'ABCD-EFGH-JKMN-PQRS' } },
  'POST /api/v1/claims/bulk': { scope: 'devices:claim', example: '/api/v1/claims/bulk', body: { items: [{ devEui: DEV_EUI, claimCode: 'ABCD-EFGH-JKMN-PQRS' }] } },
  'POST /api/v1/claims/release': { scope: 'devices:claim', example: '/api/v1/claims/release', body: { devEuis: [DEV_EUI] } },
  'DELETE /api/v1/devices/{devEui}/claim': { scope: 'devices:claim', example: `/api/v1/devices/${DEV_EUI}/claim` },
  'PATCH /api/v1/devices/{devEui}/claim': { scope: 'devices:claim', example: `/api/v1/devices/${DEV_EUI}/claim`, body: { locked: true } },
  'POST /api/v1/bindings': { scope: 'devices:bind', example: '/api/v1/bindings', body: { devEuis: [DEV_EUI], binding: { homeNetId: '000013' } } },
  'POST /api/v1/bindings/unbind': { scope: 'devices:bind', example: '/api/v1/bindings/unbind', body: { devEuis: [DEV_EUI] } },
  'PUT /api/v1/devices/{devEui}/binding': { scope: 'devices:bind', example: `/api/v1/devices/${DEV_EUI}/binding`, body: { homeNetId: '000013' } },
  'DELETE /api/v1/devices/{devEui}/binding': { scope: 'devices:bind', example: `/api/v1/devices/${DEV_EUI}/binding` },
  'POST /api/v1/transfers': { scope: 'devices:transfer', example: '/api/v1/transfers', body: { devEuis: [DEV_EUI], to: SOME_ORG } },
  'GET /api/v1/transfers': { scope: 'devices:read', example: '/api/v1/transfers' },
  'GET /api/v1/transfers/{id}': { scope: 'devices:read', example: `/api/v1/transfers/${TRANSFER}` },
  'POST /api/v1/transfers/{id}/accept': { scope: 'devices:transfer', example: `/api/v1/transfers/${TRANSFER}/accept` },
  'POST /api/v1/transfers/accept': { scope: 'devices:transfer', example: '/api/v1/transfers/accept', body: { token: `jkt_${'A'.repeat(43)}` } },
  'DELETE /api/v1/transfers/{id}': { scope: 'devices:transfer', example: `/api/v1/transfers/${TRANSFER}` },
  'GET /api/v1/peers': { scope: 'peers:read', example: '/api/v1/peers' },
  'POST /api/v1/peers': { scope: 'peers:write', example: '/api/v1/peers', body: { kind: 'ns', netId: '000013', token: 'x'.repeat(32) } },
  'GET /api/v1/keks': { scope: 'keks:read', example: '/api/v1/keks' },
  'GET /api/v1/audit': { scope: 'audit:read', example: '/api/v1/audit' },
  'POST /api/v1/organisations': { scope: 'admin', example: '/api/v1/organisations', body: { id: 'new-org', name: 'New' } },
  'GET /api/v1/organisations': { scope: 'admin', example: '/api/v1/organisations' },
  'GET /api/v1/organisations/{id}': { scope: 'authenticated', example: `/api/v1/organisations/${SOME_ORG}` },
  'PATCH /api/v1/organisations/{id}': { scope: 'admin', example: `/api/v1/organisations/${SOME_ORG}`, body: { name: 'Renamed' } },
  'POST /api/v1/organisations/{id}/api-keys': { scope: 'api-keys:write', example: `/api/v1/organisations/${SOME_ORG}/api-keys`, body: { name: 'k', scopes: ['devices:read'] } },
  'GET /api/v1/organisations/{id}/api-keys': { scope: 'api-keys:write', example: `/api/v1/organisations/${SOME_ORG}/api-keys` },
  'DELETE /api/v1/organisations/{id}/api-keys/{keyId}': { scope: 'api-keys:write', example: `/api/v1/organisations/${SOME_ORG}/api-keys/${KEY_ID}` },
};

/** Every scope an organisation's key can hold (admin is for operator keys only). */
const ORG_SCOPES = scopes.filter((s) => s !== 'admin');

type OpenApi = { paths: Record<string, Record<string, { security?: unknown[]; responses: Record<string, unknown>; operationId?: string }>> };

const operationsOf = (doc: OpenApi): string[] => Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)).sort();

const templateMatches = (template: string, path: string): boolean => new RegExp(`^${template.replace(/\{\w+\}/g, '[^/]+').replace(/\./g, '\\.')}$`).test(path);

function call(h: ApiHarness, method: string, example: string, key?: string, body?: unknown, headers?: Record<string, string>): Promise<Answer> {
  return h.call(method, example.replace(/^\/api\/v1/, ''), key, body, headers);
}

function assertProblem(r: Answer, status: number, code: string, what: string): void {
  assert.equal(r.status, status, `${what}: ${r.status} ${r.text}`);
  assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8', what);
  assert.equal(r.json?.code, code, `${what}: ${r.text}`);
}

describe('REST API / authorisation of every operation (table over the OpenAPI document)', { timeout: 180_000 }, () => {
  let h: ApiHarness;
  let doc: OpenApi;
  /** outsider's keys: `allBut[s]` holds every organisation scope except s; `only[s]` holds s alone. */
  const allBut: Record<string, string> = {};
  const only: Record<string, string> = {};
  let everything: string; // outsider, every organisation scope
  let operatorNarrow: string; // an operator key holding audit:read only

  before(async () => {
    h = await startApi();
    const admin = await operatorKey(h);
    operatorNarrow = await operatorKey(h, ['audit:read']);
    // `outsider` has every role, so no refusal below can come from a missing role rather than a missing scope.
    assert.equal((await h.call('POST', '/organisations', admin, { id: 'outsider', name: 'Outsider', roles: ['device-maker', 'se-vendor', 'device-owner', 'network-operator', 'as-operator'], netIds: ['000013'], asIds: ['as-1'] })).status, 201);
    assert.equal((await h.call('POST', '/organisations', admin, { id: SOME_ORG, name: 'Some Org', roles: ['device-owner'] })).status, 201);
    everything = (await cliJson<{ key: string }>(['api-key', 'create', ...h.dd, '--org', 'outsider', '--name', 'everything', '--scope', ...ORG_SCOPES])).key;
    for (const s of ORG_SCOPES) {
      // Made by the operator over the API (one CLI process per key would be slow); the operator may grant any of them.
      const a = await h.call('POST', '/organisations/outsider/api-keys', admin, { name: `all but ${s}`, scopes: ORG_SCOPES.filter((x) => x !== s) });
      assert.equal(a.status, 201, a.text);
      allBut[s] = a.json.key;
      const o = await h.call('POST', '/organisations/outsider/api-keys', admin, { name: `only ${s}`, scopes: [s] });
      assert.equal(o.status, 201, o.text);
      only[s] = o.json.key;
    }
    const r = await h.call('GET', '/openapi.json');
    assert.equal(r.status, 200);
    doc = r.json;
  });
  after(async () => h?.close());

  it('classifies every operation / the document\'s operations are exactly the table\'s (add new routes to ROUTES)', () => {
    const documented = operationsOf(doc);
    const unclassified = documented.filter((op) => !(op in ROUTES));
    const stale = Object.keys(ROUTES).filter((op) => !documented.includes(op));
    assert.deepEqual(unclassified, [], `operations without an authorisation entry in ROUTES: ${unclassified.join(', ')}`);
    assert.deepEqual(stale, [], `ROUTES entries the API no longer serves: ${stale.join(', ')}`);
    for (const [op, route] of Object.entries(ROUTES)) assert.ok(templateMatches(op.split(' ')[1]!, route.example), `${op}: example ${route.example} does not fit the template`);
  });

  it('documents what it enforces / security [] exactly on public operations; 401 on the others; 403 on the scoped ones', () => {
    for (const op of operationsOf(doc)) {
      const route = ROUTES[op];
      if (route === undefined) continue; // reported by the test above
      const [method, path] = op.split(' ') as [string, string];
      const o = doc.paths[path]![method.toLowerCase()]!;
      if (route.scope === 'public') {
        assert.deepEqual(o.security, [], op);
        assert.ok(!('401' in o.responses), `${op} is public and documents no 401`);
      } else {
        assert.deepEqual(o.security, [{ apiKey: [] }], op);
        assert.ok('401' in o.responses, `${op} documents 401`);
        if (route.scope !== 'authenticated') assert.ok('403' in o.responses, `${op} documents 403`);
      }
    }
  });

  for (const [op, route] of Object.entries(ROUTES)) {
    const [method] = op.split(' ') as [string, string];
    const send = (key?: string, headers?: Record<string, string>) => call(h, method, route.example, key, route.body, headers);

    if (route.scope === 'public') {
      it(`${op} / public: no key, or any Authorization header at all, is not refused`, async () => {
        for (const headers of [undefined, { authorization: 'Bearer jk_not_a_key' }]) {
          const r = await send(undefined, headers);
          assert.notEqual(r.status, 401, r.text);
          assert.notEqual(r.status, 403, r.text);
          assert.ok(r.status === 200 || (r.status === 404 && r.json.code === 'NOT_FOUND'), `${r.status} ${r.text}`);
        }
      });
      continue;
    }

    it(`${op} / no key, or an unknown key: 401 UNAUTHENTICATED`, async () => {
      for (const headers of [undefined, { authorization: `Bearer jk_${'a'.repeat(16)}_${'A'.repeat(43)}` }]) {
        const r = await send(undefined, headers);
        assertProblem(r, 401, 'UNAUTHENTICATED', op);
        assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer\b/);
      }
    });

    if (route.scope === 'authenticated') {
      it(`${op} / any key is let in, but another organisation is 404 NOT_FOUND exactly like an unknown one`, async () => {
        // The key holds every scope an organisation can hold: the refusal is about whose resource it is.
        const other = await send(everything);
        const unknown = await call(h, method, route.example.replace(SOME_ORG, 'no-such-org'), everything, route.body);
        assertProblem(other, 404, 'NOT_FOUND', op);
        assert.equal(other.text.replaceAll(SOME_ORG, 'X'), unknown.text.replaceAll('no-such-org', 'X'));
        // …while the organisation itself, with a key of a single unrelated scope, reads itself.
        const self = await call(h, method, route.example.replace(SOME_ORG, 'outsider'), only['audit:read'], route.body);
        assert.equal(self.status, 200, self.text);
      });
      continue;
    }

    it(`${op} / a key without ${route.scope} (every other scope): 403 FORBIDDEN`, async () => {
      // admin: no organisation key can hold it, so the key with every organisation scope stands for "all but".
      const key = route.scope === 'admin' ? everything : allBut[route.scope]!;
      const r = await send(key);
      assertProblem(r, 403, 'FORBIDDEN', op);
      assert.equal(r.json.detail, `this API key lacks the scope ${route.scope}`);
      // An operator key is refused the same way when it lacks the scope (unless the scope is the one it holds).
      if (route.scope !== 'audit:read') {
        const o = await send(operatorNarrow);
        assertProblem(o, 403, 'FORBIDDEN', `${op} (operator key without the scope)`);
      }
    });

    if (route.scope !== 'admin') {
      it(`${op} / a key holding only ${route.scope}: past the scope check (whatever the service then answers)`, async () => {
        const r = await send(only[route.scope]!);
        assert.notEqual(r.status, 401, r.text);
        assert.ok(!(r.status === 403 && /lacks the scope/.test(String(r.json?.detail))), `refused for a scope: ${r.text}`);
      });
    }
  }
});

// ---------------------------------------------------------------------------------------------------------------------

const JOIN_EUI = '70B3D57ED0030000';
const GHOST = '70B3D57ED00300FF'; // exists nowhere
const devEuiOf = (i: number): string => `70B3D57ED003${i.toString(16).toUpperCase().padStart(4, '0')}`;

interface Snapshot {
  readonly devices: string;
  readonly views: string[];
  readonly transfers: string;
  readonly audit: string;
  readonly peers: string;
  readonly keks: string;
}

describe('REST API / cross-tenant isolation', { timeout: 300_000 }, () => {
  let h: ApiHarness;
  let admin: string;
  let a: string; // owner-a: device-owner + network-operator 000013, every organisation scope
  let b: string; // owner-b: device-owner + network-operator 000024, every organisation scope
  let bClaims: string; // owner-b, devices:claim (its own failure budget for the claim probes)
  let c: string; // owner-c: device-owner, the recipient of A's direct offer
  let m: string; // maker-m: device-maker
  const codes = new Map<string, string>(); // DevEUI → claim code (from M's manifest)
  const devices = [1, 2, 3, 4, 5, 6].map(devEuiOf);
  const [d1, d2, d3, d4, d5] = devices as [string, string, string, string, string, string];
  let batchFile: Buffer;
  let batchId: string;
  let offerToC: string; // A's direct offer of d3 to owner-c
  let tokenOffer: string; // A's token offer of d2

  const orgKey = async (org: string, name: string, scopeList: readonly string[]): Promise<string> =>
    (await cliJson<{ key: string }>(['api-key', 'create', ...h.dd, '--org', org, '--name', name, '--scope', ...scopeList])).key;

  const get = async (path: string, key: string): Promise<Answer> => {
    const r = await h.call('GET', path, key);
    assert.equal(r.status, 200, `GET ${path}: ${r.text}`);
    return r;
  };

  async function snapshotOf(key: string, devEuis: readonly string[]): Promise<Snapshot> {
    return {
      devices: (await get('/devices?limit=1000', key)).text,
      views: await Promise.all(devEuis.map(async (d) => (await get(`/devices/${d}`, key)).text)),
      transfers: (await get('/transfers?limit=1000', key)).text,
      audit: (await get('/audit?limit=1000', key)).text,
      peers: (await get('/peers', key)).text,
      keks: (await get('/keks', key)).text,
    };
  }

  /** The answer for `devEui` equals the answer for GHOST, byte for byte once each DevEUI is replaced by the same mark. */
  async function sameAsGhost(what: string, request: (devEui: string) => Promise<Answer>, devEui: string, expected: { status: number; code: string }): Promise<void> {
    const seen = await request(devEui);
    const ghost = await request(GHOST);
    assertProblem(seen, expected.status, expected.code, `${what} ${devEui}`);
    assert.equal(seen.text.replaceAll(devEui, '<DevEUI>'), ghost.text.replaceAll(GHOST, '<DevEUI>'), `${what}: ${devEui} is answered unlike a DevEUI that does not exist`);
    for (const header of ['content-type', 'content-length', 'www-authenticate', 'retry-after', 'cache-control']) {
      assert.equal(seen.headers.get(header), ghost.headers.get(header), `${what}: header ${header}`);
    }
  }

  before(async () => {
    h = await startApi();
    admin = await operatorKey(h);
    for (const org of [
      { id: 'owner-a', name: 'Owner A', roles: ['device-owner', 'network-operator'], netIds: ['000013'] },
      { id: 'owner-b', name: 'Owner B', roles: ['device-owner', 'network-operator'], netIds: ['000024'] },
      { id: 'owner-c', name: 'Owner C', roles: ['device-owner'] },
      { id: 'maker-m', name: 'Maker M', roles: ['device-maker'] },
    ]) {
      const r = await h.call('POST', '/organisations', admin, org);
      assert.equal(r.status, 201, r.text);
    }
    a = await orgKey('owner-a', 'full', ORG_SCOPES);
    b = await orgKey('owner-b', 'full', ORG_SCOPES);
    bClaims = await orgKey('owner-b', 'claims', ['devices:claim']);
    c = await orgKey('owner-c', 'full', ORG_SCOPES);
    m = await orgKey('maker-m', 'full', ORG_SCOPES);

    // Custody: a receiving key, and one KEK per network operator (as `joinkeep receiving-key create` / `kek add` do).
    await h.joinkeep.custody.createReceivingKey();
    await h.joinkeep.custody.importKek('kek-a', randomBytes(16));
    await h.joinkeep.custody.importKek('kek-b', randomBytes(16));
    // Each network operator registers its network server over the API, with its KEK.
    for (const [key, netId, kek] of [[a, '000013', 'kek-a'], [b, '000024', 'kek-b']] as const) {
      const r = await h.call('POST', '/peers', key, { kind: 'ns', netId, token: randomBytes(24).toString('hex'), kekLabel: kek });
      assert.equal(r.status, 201, r.text);
    }

    // M: a maker with a signing key, registered for maker-m by the operator; a batch sealed in-process, with claim codes.
    const makerKey = await generateMakerKey('ES256');
    const publicKeyFile = join(tmpdir(), `joinkeep-authz-maker-${randomUUID()}.jwk`);
    await writeFile(publicKeyFile, JSON.stringify(makerKey.publicJwk));
    await cliOk(['maker', 'add', ...h.dd, '--name', 'maker-m', '--public-key', publicKeyFile, '--org', 'maker-m']);
    const recipient = await h.call('GET', '/receiving-key');
    assert.equal(recipient.status, 200, recipient.text);
    for (const d of devices) codes.set(d, generateClaimCode());
    batchId = randomUUID();
    batchFile = await sealBatch({
      recipientJwk: recipient.json as JWK,
      signingKey: makerKey.privateJwk,
      maker: 'maker-m',
      batchId,
      content: {
        kind: 'device-keys',
        devices: devices.map((d, i) => ({ devEui: d, joinEui: JOIN_EUI, macVersion: '1.0.3', appKey: randomBytes(16), serialNumber: `SN-${i + 1}`, claimCodeHash: claimCodeHash(d, codes.get(d)!) })),
      },
    });
  });
  after(async () => h?.close());

  const postBatch = (key: string) =>
    fetch(`${h.api}/batches`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: new Uint8Array(batchFile) }).then(async (r) => {
      const text = await r.text();
      return { status: r.status, text, json: JSON.parse(text) };
    });

  it('batches / B cannot import M\'s batch (403, nothing imported); M can; B still gets 403, not "already imported"', async () => {
    const refused = await postBatch(b);
    assert.equal(refused.status, 403, refused.text);
    assert.equal(refused.json.code, 'FORBIDDEN');
    assert.equal((await get('/devices?limit=1000', admin)).json.items.length, 0, 'nothing imported');
    const imported = await postBatch(m);
    assert.equal(imported.status, 201, imported.text);
    assert.equal(imported.json.devices, devices.length);
    const again = await postBatch(b);
    assert.equal(again.status, 403, `B learns nothing of the import: ${again.text}`);
    assert.equal(again.json.code, 'FORBIDDEN');
    assert.equal(again.text, refused.text, 'the same refusal before and after M imported it');
    // B lists no batch of M's, and cannot find M's batch through the devices either; M lists its own.
    assert.deepEqual((await get('/batches', b)).json.items, []);
    assert.deepEqual((await get('/batches', m)).json.items.map((x: { batchId: string }) => x.batchId), [batchId]);
    assert.deepEqual((await get(`/devices?batchId=${batchId}`, b)).json.items, []);
    assert.equal((await get(`/devices?batchId=${batchId}`, m)).json.items.length, devices.length);
  });

  it('setup / A claims d1–d3 (locked), binds d1 and d2 with its KEK, offers d3 to C and d2 by token; M sees only its unclaimed stock', async () => {
    for (const d of [d1, d2, d3]) {
      const r = await h.call('POST', '/claims', a, { devEui: d, claimCode: codes.get(d) });
      assert.equal(r.status, 201, r.text);
      assert.deepEqual(r.json, { devEui: d, owner: 'owner-a', locked: true });
    }
    const bound = await h.call('POST', '/bindings', a, { devEuis: [d1, d2], binding: { homeNetId: '000013', nsKekLabel: 'kek-a', roaming: 'home-only' } });
    assert.equal(bound.status, 200, bound.text);
    const direct = await h.call('POST', '/transfers', a, { devEuis: [d3], to: 'owner-c' });
    assert.equal(direct.status, 201, direct.text);
    offerToC = direct.json.transfer.id;
    const byToken = await h.call('POST', '/transfers', a, { devEuis: [d2] });
    assert.equal(byToken.status, 201, byToken.text);
    tokenOffer = byToken.json.transfer.id;

    const mine = (await get('/devices?limit=1000', m)).json.items.map((x: { devEui: string }) => x.devEui);
    assert.deepEqual(mine, devices.filter((d) => ![d1, d2, d3].includes(d)), 'M sees its unclaimed stock, not the devices A claimed');
    assert.deepEqual((await get('/devices?limit=1000', a)).json.items.map((x: { devEui: string }) => x.devEui), [d1, d2, d3]);
    // M cannot read A's devices one by one either: answered as for a DevEUI that does not exist.
    for (const d of [d1, d3]) {
      await sameAsGhost('M: GET /devices/{devEui}', (x) => h.call('GET', `/devices/${x}`, m), d, { status: 404, code: 'NOT_FOUND' });
      await sameAsGhost('M: GET /devices/{devEui}/activations', (x) => h.call('GET', `/devices/${x}/activations`, m), d, { status: 404, code: 'NOT_FOUND' });
    }
    // C sees the offer made to it; it does not see the devices before it accepts.
    assert.deepEqual((await get('/transfers', c)).json.items.map((t: { id: string }) => t.id), [offerToC]);
    await sameAsGhost('C: GET /devices/{devEui} (offered, not accepted)', (x) => h.call('GET', `/devices/${x}`, c), d3, { status: 404, code: 'NOT_FOUND' });
  });

  describe('B, with every scope an organisation can hold', () => {
    let aBefore: Snapshot;
    let mBefore: Snapshot;
    before(async () => {
      aBefore = await snapshotOf(a, [d1, d2, d3]);
      mBefore = await snapshotOf(m, [d4, d5]);
    });

    // What B tries on a device; each must be answered as for a DevEUI that does not exist.
    const probes: [string, (key: string, d: string) => Promise<Answer>][] = [
      ['GET /devices/{devEui}', (k, d) => h.call('GET', `/devices/${d}`, k)],
      ['GET /devices/{devEui}/activations', (k, d) => h.call('GET', `/devices/${d}/activations`, k)],
      ['PUT /devices/{devEui}/binding', (k, d) => h.call('PUT', `/devices/${d}/binding`, k, { homeNetId: '000024', nsKekLabel: 'kek-b' })],
      ['DELETE /devices/{devEui}/binding', (k, d) => h.call('DELETE', `/devices/${d}/binding`, k)],
      ['DELETE /devices/{devEui}/claim', (k, d) => h.call('DELETE', `/devices/${d}/claim`, k)],
      ['PATCH /devices/{devEui}/claim', (k, d) => h.call('PATCH', `/devices/${d}/claim`, k, { locked: false, regenerate: true })],
      ['POST /devices/{devEui}/dev-nonce-reset', (k, d) => h.call('POST', `/devices/${d}/dev-nonce-reset`, k)],
      ['POST /bindings', (k, d) => h.call('POST', '/bindings', k, { devEuis: [d], binding: { homeNetId: '000024' } })],
      ['POST /bindings/unbind', (k, d) => h.call('POST', '/bindings/unbind', k, { devEuis: [d] })],
      ['POST /claims/release', (k, d) => h.call('POST', '/claims/release', k, { devEuis: [d] })],
      ['POST /transfers (direct, to C)', (k, d) => h.call('POST', '/transfers', k, { devEuis: [d], to: 'owner-c' })],
      ['POST /transfers (token)', (k, d) => h.call('POST', '/transfers', k, { devEuis: [d] })],
    ];

    for (const [what, probe] of probes) {
      it(`${what} / on A's bound, A's offered and M's unclaimed devices: 404 NOT_FOUND, identical to an unknown DevEUI`, async () => {
        for (const d of [d1, d3, d5]) await sameAsGhost(`B: ${what}`, (x) => probe(b, x), d, { status: 404, code: 'NOT_FOUND' });
      });
    }

    it('POST /claims / A\'s locked devices, even with their right claim code: the same 403 CLAIM_FAILED as an unknown DevEUI', async () => {
      for (const d of [d1, d3]) {
        await sameAsGhost('B: POST /claims', (x) => h.call('POST', '/claims', bClaims, { devEui: x, claimCode: codes.get(d)! }), d, { status: 403, code: 'CLAIM_FAILED' });
      }
      const bulk = await h.call('POST', '/claims/bulk', bClaims, { items: [{ devEui: d1, claimCode: codes.get(d1)! }] });
      assert.equal(bulk.status, 200, bulk.text);
      assert.deepEqual(bulk.json, { claimed: 0, failed: 1, items: [{ devEui: d1, outcome: 'failed' }] });
    });

    it('a request of B naming several devices / refused as a whole, naming the first it may not see as unknown', async () => {
      await sameAsGhost('B: POST /bindings (mixed)', (x) => h.call('POST', '/bindings', b, { devEuis: [x, d2, d4], binding: { homeNetId: '000024' } }), d1, { status: 404, code: 'NOT_FOUND' });
    });

    it('transfers / B cannot read, accept or cancel A\'s offers: 404 like an unknown id; B\'s list has none of them', async () => {
      const ghost = randomUUID();
      for (const id of [offerToC, tokenOffer]) {
        for (const [what, request] of [
          ['GET /transfers/{id}', (x: string) => h.call('GET', `/transfers/${x}`, b)],
          ['POST /transfers/{id}/accept', (x: string) => h.call('POST', `/transfers/${x}/accept`, b)],
          ['DELETE /transfers/{id}', (x: string) => h.call('DELETE', `/transfers/${x}`, b)],
        ] as const) {
          const seen = await request(id);
          const unknown = await request(ghost);
          assertProblem(seen, 404, 'NOT_FOUND', `B: ${what} ${id}`);
          assert.equal(seen.text.replaceAll(id, '<id>'), unknown.text.replaceAll(ghost, '<id>'), `B: ${what}`);
        }
      }
      // A wrong token is refused like any other; only the token's holder can accept a token offer.
      const byToken = await h.call('POST', '/transfers/accept', b, { token: `jkt_${randomBytes(32).toString('base64url')}` });
      assertProblem(byToken, 404, 'NOT_FOUND', 'B: accept by a wrong token');
      assert.deepEqual((await get('/transfers?limit=1000', b)).json.items, []);
      // M, not a device owner, cannot accept anything either.
      assertProblem(await h.call('POST', `/transfers/${offerToC}/accept`, m), 403, 'FORBIDDEN', 'M: accept');
    });

    it('listings / B\'s devices, peers, KEKs and audit trail hold none of A\'s or M\'s data', async () => {
      assert.deepEqual((await get('/devices?limit=1000', b)).json.items, []);
      const peers = (await get('/peers', b)).json.items;
      assert.deepEqual(peers.map((p: { id: string }) => p.id), ['ns/000024']);
      assert.deepEqual((await get('/keks', b)).json.items, [{ label: 'kek-b', usedBy: ['ns/000024'], inCustody: true }]);
      assert.deepEqual((await get('/keks', a)).json.items, [{ label: 'kek-a', usedBy: ['ns/000013'], inCustody: true }]);
      const audit = await get('/audit?limit=1000', b);
      assert.ok(audit.json.items.length > 0, 'B has a trail of its own (its keys), so an empty answer proves nothing');
      for (const e of audit.json.items as { organisation: string | null; subject: string }[]) assert.equal(e.organisation, 'owner-b', JSON.stringify(e));
      for (const secret of [...devices, offerToC, tokenOffer, 'owner-a', 'maker-m', batchId]) assert.ok(!audit.text.includes(secret), `B's audit trail mentions ${secret}`);
      for (const d of [d1, d3]) assert.deepEqual((await get(`/audit?subject=device/${d}`, b)).json.items, []);
      assert.deepEqual((await get(`/audit?subject=transfer/${offerToC}`, b)).json.items, []);
      // A's trail, conversely, has A's own events and nobody else's.
      const aAudit = (await get('/audit?limit=1000', a)).json.items as { organisation: string; action: string }[];
      assert.ok(aAudit.every((e) => e.organisation === 'owner-a'));
      assert.ok(aAudit.some((e) => e.action === 'device.claim') && aAudit.some((e) => e.action === 'transfer.offer'));
      // Organisations and their keys: 404 like unknown ones.
      for (const path of ['/organisations/owner-a', '/organisations/owner-a/api-keys']) {
        const seen = await h.call('GET', path, b);
        const unknown = await h.call('GET', path.replace('owner-a', 'owner-z'), b);
        assertProblem(seen, 404, 'NOT_FOUND', `B: GET ${path}`);
        assert.equal(seen.text.replaceAll('owner-a', 'X'), unknown.text.replaceAll('owner-z', 'X'));
      }
    });

    it('KEKs / B cannot register a peer under A\'s KEK: 422 KEK_NOT_FOUND exactly as for a label that does not exist', async () => {
      const peer = (kekLabel: string) => h.call('POST', '/peers', b, { kind: 'ns', netId: '000024', nsId: '0102030405060708', token: 'b'.repeat(40), kekLabel });
      const seen = await peer('kek-a');
      const unknown = await peer('kek-z');
      assertProblem(seen, 422, 'KEK_NOT_FOUND', 'B: POST /peers with A\'s KEK');
      assert.equal(seen.text.replaceAll('kek-a', '<label>'), unknown.text.replaceAll('kek-z', '<label>'));
      assert.deepEqual((await get('/peers', b)).json.items.map((p: { id: string }) => p.id), ['ns/000024'], 'nothing registered');
      assert.deepEqual((await get('/keks', b)).json.items.map((k: { label: string }) => k.label), ['kek-b']);
      // B's own KEK still goes: the refusal is about whose KEK it is.
      const own = await peer('kek-b');
      assert.equal(own.status, 201, own.text);
    });

    it('afterwards / A\'s and M\'s devices, transfers, audit trails, peers and KEKs are exactly as before', async () => {
      assert.deepEqual(await snapshotOf(a, [d1, d2, d3]), aBefore);
      assert.deepEqual(await snapshotOf(m, [d4, d5]), mBefore);
      // And the offers still work for their intended recipients.
      const accepted = await h.call('POST', `/transfers/${offerToC}/accept`, c);
      assert.equal(accepted.status, 200, accepted.text);
      assert.equal((await get(`/devices/${d3}`, c)).json.owner, 'owner-c');
      await sameAsGhost('A after the transfer: GET /devices/{devEui}', (x) => h.call('GET', `/devices/${x}`, a), d3, { status: 404, code: 'NOT_FOUND' });
    });
  });
});
