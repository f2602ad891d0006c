import { type Static, Type } from '@sinclair/typebox';
import { type ApiKeyView, createApiKey, listApiKeys, revokeApiKey } from '../../commissioning/api-keys.js';
import { scopes } from '../../commissioning/caller.js';
import { callerOf } from '../auth.js';
import type { ApiContext, ApiRoutes } from '../context.js';
import { Closed, DateTime, NullableDateTime, Page, PageQuery, iso, problems } from '../schemas.js';
import { OrganisationId, OrganisationParams } from './organisations.js';

const ScopeName = Type.Union(scopes.map((s) => Type.Literal(s)));
const KeyId = Type.String({ pattern: '^[a-z2-7]{16}$', description: 'the public id of the key (`jk_<id>_…`)' });

/** A key as listed: never the secret, never its hash (the closed schema drops anything else a record carries). */
const ApiKey = Closed({
  id: KeyId,
  organisation: Type.Union([OrganisationId, Type.Null()]),
  name: Type.String(),
  scopes: Type.Array(Type.String()),
  createdAt: DateTime,
  expiresAt: NullableDateTime,
  revokedAt: NullableDateTime,
});
const CreatedApiKey = Closed({
  key: Type.String({ description: 'the key, `jk_<id>_<secret>`: shown this once, never stored (only a hash of the secret is)' }),
  apiKey: ApiKey,
});
const CreateApiKey = Closed({
  name: Type.String({ minLength: 1, maxLength: 100 }),
  scopes: Type.Array(ScopeName, { minItems: 1, maxItems: scopes.length, description: 'not admin; at most the scopes the calling key holds' }),
  expiresAt: Type.Optional(DateTime),
});
const KeyParams = Closed({ id: OrganisationId, keyId: KeyId });

function apiKeyView(k: ApiKeyView): Static<typeof ApiKey> {
  return { id: k.id, organisation: k.organisation, name: k.name, scopes: [...k.scopes], createdAt: iso(k.createdAt), expiresAt: iso(k.expiresAt), revokedAt: iso(k.revokedAt) };
}

export const apiKeyRoutes: ApiRoutes = (app, ctx: ApiContext) => {
  const deps = { store: ctx.storage, audit: ctx.audit, now: ctx.now };

  app.post<{ Params: Static<typeof OrganisationParams>; Body: Static<typeof CreateApiKey> }>('/api/v1/organisations/:id/api-keys', {
    config: { scope: 'api-keys:write' },
    schema: {
      summary: 'Create an API key of the organisation (the key is in the answer, once)',
      tags: ['api-keys'],
      operationId: 'createApiKey',
      params: OrganisationParams,
      body: CreateApiKey,
      response: { 201: CreatedApiKey, ...problems(404) },
    },
    handler: async (req, reply) => {
      const created = await createApiKey(deps, callerOf(req), req.params.id, { name: req.body.name, scopes: req.body.scopes, expiresAt: req.body.expiresAt === undefined ? null : new Date(req.body.expiresAt) });
      return reply.code(201).header('cache-control', 'no-store').send({ key: created.key, apiKey: apiKeyView(created.apiKey) });
    },
  });

  app.get<{ Params: Static<typeof OrganisationParams>; Querystring: PageQuery }>('/api/v1/organisations/:id/api-keys', {
    config: { scope: 'api-keys:write' },
    schema: { summary: 'The organisation\'s API keys, revoked and expired ones included', tags: ['api-keys'], operationId: 'listApiKeys', params: OrganisationParams, querystring: PageQuery, response: { 200: Page(ApiKey), ...problems(404) } },
    handler: async (req) => {
      // Keys are few per organisation: paged here by id, the cursor being the last id of the page.
      const all = await listApiKeys(deps, callerOf(req), req.params.id);
      const after = req.query.after;
      const rest = after === undefined ? all : all.filter((k) => k.id > after);
      const items = rest.slice(0, req.query.limit);
      return { items: items.map(apiKeyView), ...(rest.length > items.length ? { next: items[items.length - 1]!.id } : {}) };
    },
  });

  app.delete<{ Params: Static<typeof KeyParams> }>('/api/v1/organisations/:id/api-keys/:keyId', {
    config: { scope: 'api-keys:write' },
    schema: { summary: 'Revoke an API key (at once; revoking a revoked key changes nothing)', tags: ['api-keys'], operationId: 'revokeApiKey', params: KeyParams, response: { 200: ApiKey, ...problems(404) } },
    handler: async (req) => apiKeyView(await revokeApiKey(deps, callerOf(req), req.params.keyId, req.params.id)),
  });
};
