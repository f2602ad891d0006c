import { type Static, Type } from '@sinclair/typebox';
import { createOrganisation, getOrganisation, listOrganisations, organisationRoles, updateOrganisation } from '../../commissioning/organisations.js';
import type { OrganisationRecord } from '../../storage/storage.js';
import { callerOf } from '../auth.js';
import type { ApiContext, ApiRoutes } from '../context.js';
import { Closed, DateTime, Page, PageQuery, iso, problems } from '../schemas.js';

export const OrganisationId = Type.String({ pattern: '^[a-z0-9][a-z0-9-]{1,62}$', description: 'slug' });
const Role = Type.Union(organisationRoles.map((r) => Type.Literal(r)));
const NetIdHex = Type.String({ pattern: '^[0-9A-Fa-f]{6}$', description: 'NetID, 6 hex digits' });
const EuiHex = Type.String({ pattern: '^[0-9A-Fa-f]{16}$', description: 'NSID (EUI-64), 16 hex digits' });
const AsId = Type.String({ minLength: 1, maxLength: 128 });

const Organisation = Closed({
  id: OrganisationId,
  name: Type.String(),
  roles: Type.Array(Role),
  netIds: Type.Array(NetIdHex),
  nsIds: Type.Array(EuiHex),
  asIds: Type.Array(AsId),
  createdAt: DateTime,
});

const Fields = {
  name: Type.String({ minLength: 1, maxLength: 200 }),
  roles: Type.Array(Role, { maxItems: 5 }),
  netIds: Type.Array(NetIdHex, { maxItems: 1000, description: 'NetIDs it operates (role network-operator)' }),
  nsIds: Type.Array(EuiHex, { maxItems: 1000, description: 'NSIDs of its network servers (role network-operator)' }),
  asIds: Type.Array(AsId, { maxItems: 1000, description: 'AS-IDs it operates (role as-operator)' }),
};
const CreateOrganisation = Closed({ id: OrganisationId, name: Fields.name, roles: Type.Optional(Fields.roles), netIds: Type.Optional(Fields.netIds), nsIds: Type.Optional(Fields.nsIds), asIds: Type.Optional(Fields.asIds) });
const UpdateOrganisation = Closed(
  { name: Type.Optional(Fields.name), roles: Type.Optional(Fields.roles), netIds: Type.Optional(Fields.netIds), nsIds: Type.Optional(Fields.nsIds), asIds: Type.Optional(Fields.asIds) },
  { minProperties: 1 },
);
export const OrganisationParams = Closed({ id: OrganisationId });

function organisationView(o: OrganisationRecord): Static<typeof Organisation> {
  return { id: o.id, name: o.name, roles: [...o.roles], netIds: [...o.netIds], nsIds: [...o.nsIds], asIds: [...o.asIds], createdAt: iso(o.createdAt) };
}

export const organisationRoutes: ApiRoutes = (app, ctx: ApiContext) => {
  const deps = { store: ctx.storage, audit: ctx.audit, now: ctx.now };

  app.post<{ Body: Static<typeof CreateOrganisation> }>('/api/v1/organisations', {
    config: { scope: 'admin' },
    schema: { summary: 'Create an organisation', tags: ['organisations'], operationId: 'createOrganisation', body: CreateOrganisation, response: { 201: Organisation, ...problems(409) } },
    handler: async (req, reply) => reply.code(201).send(organisationView(await createOrganisation(deps, callerOf(req), req.body))),
  });

  app.get<{ Querystring: PageQuery }>('/api/v1/organisations', {
    config: { scope: 'admin' },
    schema: { summary: 'List organisations', tags: ['organisations'], operationId: 'listOrganisations', querystring: PageQuery, response: { 200: Page(Organisation) } },
    handler: async (req) => {
      const page = await listOrganisations(deps, callerOf(req), { limit: req.query.limit, ...(req.query.after === undefined ? {} : { after: req.query.after }) });
      return { items: page.items.map(organisationView), ...(page.next === undefined ? {} : { next: page.next }) };
    },
  });

  app.get<{ Params: Static<typeof OrganisationParams> }>('/api/v1/organisations/:id', {
    // Any key: an organisation reads itself, admin reads all; others get 404 as for an unknown id.
    config: { scope: 'authenticated' },
    schema: { summary: 'An organisation (admin, or the organisation itself)', tags: ['organisations'], operationId: 'getOrganisation', params: OrganisationParams, response: { 200: Organisation, ...problems(404) } },
    handler: async (req) => organisationView(await getOrganisation(deps, callerOf(req), req.params.id)),
  });

  app.patch<{ Params: Static<typeof OrganisationParams>; Body: Static<typeof UpdateOrganisation> }>('/api/v1/organisations/:id', {
    config: { scope: 'admin' },
    schema: { summary: 'Change an organisation (the fields given)', tags: ['organisations'], operationId: 'updateOrganisation', params: OrganisationParams, body: UpdateOrganisation, response: { 200: Organisation, ...problems(404) } },
    handler: async (req) => organisationView(await updateOrganisation(deps, callerOf(req), req.params.id, req.body)),
  });
};
