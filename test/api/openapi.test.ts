import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Validator } from '@seriousme/openapi-schema-validator';
import Fastify from 'fastify';
import { addAuthentication } from '../../src/api/auth.js';
import { type ApiHarness, startApi } from './harness.js';

/*
 * The OpenAPI document is generated from the routes, and this checks it stays the truth: valid OpenAPI 3.1 (by an
 * independent validator), exactly the operations the server serves, and a `security` on every operation that needs a
 * key. A route that declares no scope is refused at start-up.
 */

describe('REST API / OpenAPI document', { timeout: 120_000 }, () => {
  let h: ApiHarness;
  let doc: { openapi: string; paths: Record<string, Record<string, { security?: unknown[]; responses: Record<string, unknown>; parameters?: unknown[] }>>; components: { securitySchemes: Record<string, unknown> } };

  before(async () => {
    h = await startApi();
    const r = await h.call('GET', '/openapi.json');
    assert.equal(r.status, 200);
    doc = r.json;
  });
  after(async () => h?.close());

  it('is valid OpenAPI 3.1.0 / @seriousme/openapi-schema-validator', async () => {
    assert.equal(doc.openapi, '3.1.0');
    const result = await new Validator().validate(structuredClone(doc));
    assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
  });

  it('lists exactly the operations served / (method, path) from the document = routes registered, less the docs UI', () => {
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`)).sort();
    // Fastify's `:param` is OpenAPI's `{param}`; the Swagger UI's own routes (/api/v1/docs*) are not API operations.
    const served = h.served.filter((r) => !r.url.startsWith('/api/v1/docs')).map((r) => `${r.method} ${r.url.replace(/:(\w+)/g, '{$1}')}`).sort();
    assert.deepEqual(documented, served);
    assert.ok(served.length >= 9, served.join('\n'));
  });

  it('says how every operation authenticates / bearer scheme; security on each; public ones exactly the three public routes', () => {
    assert.deepEqual(doc.components.securitySchemes['apiKey'], { type: 'http', scheme: 'bearer', bearerFormat: 'jk_<id>_<secret>', description: (doc.components.securitySchemes['apiKey'] as { description: string }).description });
    const publicOps: string[] = [];
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        assert.ok(Array.isArray(op.security), `${method} ${path} has security`);
        if (op.security!.length === 0) publicOps.push(`${method.toUpperCase()} ${path}`);
        else {
          assert.deepEqual(op.security, [{ apiKey: [] }], `${method} ${path}`);
          assert.ok('401' in op.responses, `${method} ${path} documents 401`);
        }
      }
    }
    assert.deepEqual(publicOps.sort(), ['GET /api/v1/openapi.json', 'GET /api/v1/receiving-key']);
  });

  it('leaks no secret field / no response schema declares a secret, a hash or a private JWK member; every object is closed', () => {
    const names = new Set<string>();
    const open: string[] = [];
    const walk = (node: unknown, where: string): void => {
      if (Array.isArray(node)) node.forEach((n, i) => walk(n, `${where}/${i}`));
      else if (typeof node === 'object' && node !== null) {
        const o = node as Record<string, unknown>;
        if (o['type'] === 'object' && typeof o['properties'] === 'object' && Object.keys(o['properties'] as object).length > 0) {
          for (const k of Object.keys(o['properties'] as object)) names.add(k);
          if (o['additionalProperties'] !== false) open.push(where);
        }
        for (const [k, v] of Object.entries(o)) walk(v, `${where}/${k}`);
      }
    };
    for (const [path, ops] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(ops)) walk(op.responses, `${method} ${path}`);
    for (const field of ['secret', 'secretSha256', 'tokenSha256', 'claimCodeHash', 'appKeyHandle', 'nwkKeyHandle', 'd', 'p', 'q']) assert.ok(!names.has(field), `a response declares "${field}"`);
    assert.deepEqual(open, [], 'response objects with declared fields are closed (additionalProperties: false)');
  });

  it('serves the browsable docs / GET /api/v1/docs without a key', async () => {
    const r = await fetch(`${h.api}/docs/static/index.html`);
    assert.equal(r.status, 200);
    assert.match(await r.text(), /swagger/i);
  });

  it('refuses at start-up a route without a scope / a programming error, not an open route', async () => {
    const app = Fastify();
    addAuthentication(app as never, { authenticate: async () => assert.fail('not called') });
    await assert.rejects(async () => {
      app.get('/api/v1/forgotten', async () => ({}));
      await app.ready();
    }, /must declare config\.scope/);
    await app.close().catch(() => undefined);
  });
});
