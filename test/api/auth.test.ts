import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cliJson, cliOk } from '../helpers/cli-run.js';
import { type ApiHarness, operatorKey, startApi } from './harness.js';

/*
 * REST API authentication and authorisation over real HTTP against a real SQLite installation: every way of failing
 * to authenticate is the same 401 (a caller cannot tell an unknown key from a revoked one), scopes are enforced per
 * route (403), and an organisation sees and manages only itself and its own keys (others' answer like unknown ones).
 */

describe('REST API / authentication and authorisation', { timeout: 120_000 }, () => {
  let h: ApiHarness;
  let admin: string;
  let acmeKeys: string; // acme, api-keys:write + batches:write
  let acmeRead: string; // acme, devices:read only
  let netKey: string; // net-one, api-keys:write
  let acmeKeyId: string;

  before(async () => {
    h = await startApi();
    admin = await operatorKey(h);
    await cliOk(['org', 'create', ...h.dd, '--id', 'acme', '--name', 'Acme Sensors', '--role', 'device-maker']);
    await cliOk(['org', 'create', ...h.dd, '--id', 'net-one', '--name', 'Net One', '--role', 'network-operator', '--net-id', '000013']);
    const a = await cliJson<{ key: string; apiKey: { id: string } }>(['api-key', 'create', ...h.dd, '--org', 'acme', '--name', 'keys', '--scope', 'api-keys:write', 'batches:write', 'devices:read']);
    acmeKeys = a.key;
    acmeKeyId = a.apiKey.id;
    acmeRead = (await cliJson<{ key: string }>(['api-key', 'create', ...h.dd, '--org', 'acme', '--name', 'reader', '--scope', 'devices:read'])).key;
    netKey = (await cliJson<{ key: string }>(['api-key', 'create', ...h.dd, '--org', 'net-one', '--name', 'keys', '--scope', 'api-keys:write'])).key;
  });
  after(async () => h?.close());

  describe('401 UNAUTHENTICATED', () => {
    it('missing, malformed, unknown id, wrong secret, revoked, expired / identical bodies, WWW-Authenticate: Bearer', async () => {
      const revoked = await cliJson<{ key: string; apiKey: { id: string } }>(['api-key', 'create', ...h.dd, '--org', 'acme', '--name', 'to revoke', '--scope', 'devices:read']);
      const cliStarted = Date.now();
      await cliOk(['api-key', 'revoke', ...h.dd, revoked.apiKey.id]);
      // The expiry must still be ahead when the next CLI run checks it: three times what a CLI run just took, on a
      // loaded machine several seconds (a fixed 1.5 s once failed), and at least 1.5 s.
      const expiresAt = Date.now() + Math.max(1500, 3 * (Date.now() - cliStarted));
      const expiring = await cliJson<{ key: string }>(['api-key', 'create', ...h.dd, '--org', 'acme', '--name', 'short', '--scope', 'api-keys:write', '--expires', new Date(expiresAt).toISOString()]);
      assert.equal((await h.call('GET', '/organisations/acme', expiring.key)).status, 200, 'valid before its expiry');
      await new Promise((r) => setTimeout(r, Math.max(0, expiresAt - Date.now()) + 100));
      const [, id, secret] = /^jk_([a-z2-7]{16})_(.+)$/.exec(acmeKeys)!;
      const wrongSecret = `jk_${id}_${secret!.startsWith('A') ? 'B' : 'A'}${secret!.slice(1)}`;
      const unknownId = `jk_${'a'.repeat(16)}_${secret}`;
      const cases: [string, Record<string, string>][] = [
        ['missing', {}],
        ['not Bearer', { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }],
        ['malformed', { authorization: 'Bearer jk_short_x' }],
        ['empty Bearer', { authorization: 'Bearer ' }],
        ['unknown id', { authorization: `Bearer ${unknownId}` }],
        ['wrong secret', { authorization: `Bearer ${wrongSecret}` }],
        ['revoked', { authorization: `Bearer ${revoked.key}` }],
        ['expired', { authorization: `Bearer ${expiring.key}` }],
      ];
      const bodies = new Set<string>();
      for (const [name, headers] of cases) {
        const r = await h.call('GET', '/organisations/acme', undefined, undefined, headers);
        assert.equal(r.status, 401, `${name}: ${r.text}`);
        assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer\b/, name);
        assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8', name);
        assert.equal(r.json.code, 'UNAUTHENTICATED', name);
        bodies.add(r.text);
      }
      assert.equal(bodies.size, 1, `one body for every reason: ${[...bodies].join('\n')}`);
    });

    it('public routes / need no key', async () => {
      assert.equal((await h.call('GET', '/openapi.json')).status, 200);
      assert.equal((await h.call('GET', '/receiving-key')).json.code, 'NOT_FOUND', 'no receiving key yet, but no 401');
    });
  });

  describe('403 FORBIDDEN: scopes', () => {
    it('an organisation key without admin / cannot list or create organisations', async () => {
      for (const [method, body] of [['GET', undefined], ['POST', { id: 'evil', name: 'Evil' }]] as const) {
        const r = await h.call(method, '/organisations', acmeKeys, body);
        assert.equal(r.status, 403, r.text);
        assert.equal(r.json.code, 'FORBIDDEN');
        assert.match(r.json.detail, /scope admin/);
      }
    });
    it('a key without api-keys:write / cannot list, create or revoke keys', async () => {
      assert.equal((await h.call('GET', '/organisations/acme/api-keys', acmeRead)).status, 403);
      assert.equal((await h.call('POST', '/organisations/acme/api-keys', acmeRead, { name: 'x', scopes: ['devices:read'] })).status, 403);
      assert.equal((await h.call('DELETE', `/organisations/acme/api-keys/${acmeKeyId}`, acmeRead)).status, 403);
    });
    it('a key without batches:write / cannot import batches', async () => {
      const r = await h.call('POST', '/batches', acmeRead, { anything: true });
      assert.equal(r.status, 403);
      assert.equal(r.json.code, 'FORBIDDEN');
    });
    it('an organisation key / cannot grant admin, nor scopes it does not hold', async () => {
      const adminGrant = await h.call('POST', '/organisations/acme/api-keys', acmeKeys, { name: 'x', scopes: ['admin'] });
      assert.equal(adminGrant.status, 403, adminGrant.text);
      const beyond = await h.call('POST', '/organisations/acme/api-keys', acmeKeys, { name: 'x', scopes: ['devices:transfer'] });
      assert.equal(beyond.status, 403, beyond.text);
      assert.match(beyond.json.detail, /devices:transfer/);
    });
    it('the operator / cannot give an organisation\'s key admin either', async () => {
      const r = await h.call('POST', '/organisations/acme/api-keys', admin, { name: 'x', scopes: ['admin'] });
      assert.equal(r.status, 403, r.text);
    });
  });

  describe('organisations', () => {
    it('the operator / creates, lists (paged), reads and updates organisations', async () => {
      const created = await h.call('POST', '/organisations', admin, { id: 'as-co', name: 'AS Co', roles: ['as-operator'], asIds: ['as-1'] });
      assert.equal(created.status, 201, created.text);
      assert.deepEqual({ ...created.json, createdAt: undefined }, { id: 'as-co', name: 'AS Co', roles: ['as-operator'], netIds: [], nsIds: [], asIds: ['as-1'], createdAt: undefined });
      assert.equal((await h.call('POST', '/organisations', admin, { id: 'as-co', name: 'again' })).json.code, 'CONFLICT');
      const first = await h.call('GET', '/organisations?limit=2', admin);
      assert.equal(first.status, 200, first.text);
      assert.equal(first.json.items.length, 2);
      assert.equal(typeof first.json.next, 'string');
      const rest = await h.call('GET', `/organisations?limit=2&after=${encodeURIComponent(first.json.next)}`, admin);
      assert.deepEqual([...first.json.items, ...rest.json.items].map((o: { id: string }) => o.id).sort(), ['acme', 'as-co', 'net-one']);
      const patched = await h.call('PATCH', '/organisations/net-one', admin, { netIds: ['000013', '00001a'], nsIds: ['0102030405060708'] });
      assert.equal(patched.status, 200, patched.text);
      assert.deepEqual(patched.json.netIds, ['000013', '00001A']);
      assert.deepEqual(patched.json.nsIds, ['0102030405060708']);
      const audit = await h.joinkeep.storage.listAudit({ subject: 'organisation/net-one' });
      assert.deepEqual(audit.items.map((e) => e.action).sort(), ['organisation.create', 'organisation.update']);
    });
    it('invalid input / 400 INVALID_INPUT problem: schema (pattern, unknown field, limit) and service (role without its fields)', async () => {
      for (const [path, body] of [
        ['/organisations', { id: 'Bad Id', name: 'x' }],
        ['/organisations', { id: 'ok-id', name: 'x', extra: 1 }],
        ['/organisations', { id: 'ok-id', name: 'x', netIds: ['000013'] }],
        ['/organisations', { id: 'ok-id', name: 'x', roles: ['king'] }],
      ] as const) {
        const r = await h.call('POST', path, admin, body);
        assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
        assert.equal(r.json.code, 'INVALID_INPUT');
        assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8');
      }
      assert.equal((await h.call('GET', '/organisations?limit=0', admin)).json.code, 'INVALID_INPUT');
      assert.equal((await h.call('GET', '/organisations?limit=1001', admin)).json.code, 'INVALID_INPUT');
      assert.equal((await h.call('PATCH', '/organisations/acme', admin, {})).json.code, 'INVALID_INPUT');
    });
    it('an organisation / reads itself; another one answers 404 like an unknown id; it cannot update itself', async () => {
      assert.equal((await h.call('GET', '/organisations/acme', acmeRead)).json.id, 'acme');
      const other = await h.call('GET', '/organisations/net-one', acmeRead);
      const unknown = await h.call('GET', '/organisations/no-such-org', acmeRead);
      assert.equal(other.status, 404);
      assert.equal(unknown.status, 404);
      assert.deepEqual({ ...other.json, detail: other.json.detail.replace('net-one', 'X') }, { ...unknown.json, detail: unknown.json.detail.replace('no-such-org', 'X') });
      assert.equal((await h.call('PATCH', '/organisations/acme', acmeKeys, { name: 'Mine now' })).status, 403);
    });
  });

  describe('API keys', () => {
    it('an organisation / creates a key shown once, lists its keys without secrets, revokes one; the revoked key is refused at once', async () => {
      const created = await h.call('POST', '/organisations/acme/api-keys', acmeKeys, { name: 'line 2', scopes: ['devices:read'] });
      assert.equal(created.status, 201, created.text);
      assert.match(created.json.key, /^jk_[a-z2-7]{16}_[A-Za-z0-9_-]{43}$/);
      assert.equal(created.headers.get('cache-control'), 'no-store');
      assert.equal((await h.call('GET', '/organisations/acme', created.json.key)).status, 200);
      const listed = await h.call('GET', '/organisations/acme/api-keys', acmeKeys);
      assert.equal(listed.status, 200);
      assert.ok(listed.json.items.some((k: { id: string }) => k.id === created.json.apiKey.id));
      const secret = created.json.key.split('_').slice(2).join('_');
      assert.ok(!listed.text.includes(secret) && !/secret|sha256/i.test(listed.text), 'no secret and no hash in the list');
      for (const k of listed.json.items) assert.deepEqual(Object.keys(k).sort(), ['createdAt', 'expiresAt', 'id', 'name', 'organisation', 'revokedAt', 'scopes']);
      const revoked = await h.call('DELETE', `/organisations/acme/api-keys/${created.json.apiKey.id}`, acmeKeys);
      assert.equal(revoked.status, 200, revoked.text);
      assert.equal(typeof revoked.json.revokedAt, 'string');
      assert.equal((await h.call('GET', '/organisations/acme', created.json.key)).status, 401);
      assert.equal((await h.call('DELETE', `/organisations/acme/api-keys/${created.json.apiKey.id}`, acmeKeys)).status, 200, 'revoking again changes nothing');
      const audit = await h.joinkeep.storage.listAudit({ subject: `api-key/${created.json.apiKey.id}` });
      assert.deepEqual(audit.items.map((e) => e.action).sort(), ['api-key.create', 'api-key.revoke']);
      assert.ok(!JSON.stringify(audit.items).includes(secret), 'the secret is not in the audit trail');
    });
    it('org isolation / another organisation\'s keys are 404: listing, creating, revoking (also by its own path)', async () => {
      assert.equal((await h.call('GET', '/organisations/acme/api-keys', netKey)).status, 404);
      assert.equal((await h.call('POST', '/organisations/acme/api-keys', netKey, { name: 'x', scopes: ['api-keys:write'] })).status, 404);
      assert.equal((await h.call('DELETE', `/organisations/acme/api-keys/${acmeKeyId}`, netKey)).status, 404);
      assert.equal((await h.call('DELETE', `/organisations/net-one/api-keys/${acmeKeyId}`, netKey)).status, 404, 'acme\'s key under net-one\'s path');
      assert.equal((await h.call('GET', '/organisations/acme', acmeKeys)).status, 200, 'acme\'s key still works');
    });
    it('the operator / manages any organisation\'s keys; operator keys never appear under an organisation', async () => {
      const listed = await h.call('GET', '/organisations/net-one/api-keys', admin);
      assert.equal(listed.status, 200);
      assert.ok(listed.json.items.every((k: { organisation: string }) => k.organisation === 'net-one'));
      const cli = await cliJson<{ organisation: string | null }[]>(['api-key', 'list', ...h.dd, '--operator']);
      assert.ok(cli.length >= 1 && cli.every((k) => k.organisation === null));
    });
  });
});
